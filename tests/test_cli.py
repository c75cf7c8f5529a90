"""The `radio` command line: clear Vietnamese messages and exit codes, never a traceback for a user mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from radio.cli import main
from radio.sound.ffmpeg import probe_duration
from tests.conftest import DEMO


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    for var in ("RADIO_DATABASE_URL", "RADIO_MQTT_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "data"


def test_schedule_load_then_preview_lists_coming_occurrences(capsys: pytest.CaptureFixture[str]) -> None:
    """Loading the demo programme reports what was created, and preview lists the coming week per slot."""
    assert main(["schedule", "load", str(DEMO)]) == 0
    assert "khung giờ: tạo 10," in capsys.readouterr().out
    assert main(["schedule", "load", str(DEMO)]) == 0
    assert "khung giờ: tạo 0, sửa 0, giữ nguyên 10" in capsys.readouterr().out
    assert main(["schedule", "preview", "--days", "7", "--zone", "tdp-4"]) == 0
    out = capsys.readouterr().out
    assert "Chuyên mục Chuyển đổi số" in out and "TDP 1, 2, 3" not in out


def test_bad_programme_file_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A programme with an impossible time exits 2 with file:line and field, and stores nothing."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text(encoding="utf-8").replace('time: "06:30"', 'time: "25:30"'), encoding="utf-8")
    assert main(["schedule", "load", str(bad)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if "25:30" in text)
    assert f"bad.yaml:{line}" in err and "time" in err and "Traceback" not in err
    assert main(["schedule", "preview"]) == 0
    assert "Không có lượt phát nào" in capsys.readouterr().out


def test_tts_normalize_prints_the_spoken_form(capsys: pytest.CaptureFixture[str]) -> None:
    """`radio tts normalize` prints the spoken form of administrative text."""
    assert main(["tts", "normalize", "UBND phường thực hiện TTHC trước ngày 30/9/2024"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("ủy ban nhân dân phường thực hiện thủ tục hành chính")
    assert "ba mươi tháng chín năm hai nghìn không trăm hai mươi tư" in out


def test_tts_say_writes_the_processed_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`radio tts say` writes an MP3 that decodes to the duration it reports."""
    out = tmp_path / "out.mp3"
    assert main(["tts", "say", "Kính mời bà con đến Nhà văn hóa TDP số 3 lúc 19h30.", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    seconds = float(printed.split(":")[1].split("giây")[0].strip())
    assert probe_duration(out) == pytest.approx(seconds, abs=0.1) and seconds > 2


def test_empty_bulletin_text_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Empty text exits 2 with a message instead of producing silence."""
    assert main(["tts", "say", "   ", "-o", str(tmp_path / "x.mp3")]) == 2
    assert "Lỗi" in capsys.readouterr().err
    assert not (tmp_path / "x.mp3").exists()


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown time zone in RADIO_TIMEZONE exits 2 naming the variable."""
    monkeypatch.setenv("RADIO_TIMEZONE", "Mars/Olympus")
    assert main(["log"]) == 2
    assert "RADIO_TIMEZONE" in capsys.readouterr().err


def test_log_on_an_empty_database(capsys: pytest.CaptureFixture[str]) -> None:
    """`radio log` on a fresh database says there is nothing yet."""
    assert main(["log"]) == 0
    assert "Chưa có lượt phát nào" in capsys.readouterr().out


def test_a_changing_load_is_audited_and_the_chain_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    """Loading a programme appends one audit entry (an unchanged reload none), and the chain verifies."""
    assert main(["schedule", "load", str(DEMO)]) == 0
    assert main(["schedule", "load", str(DEMO)]) == 0
    capsys.readouterr()
    assert main(["audit", "log"]) == 0
    assert capsys.readouterr().out.count("programme.loaded") == 1
    assert main(["audit", "verify"]) == 0


def test_serve_with_the_broker_down_is_one_clear_line(tmp_path: Path) -> None:
    """`radio serve` against a broker that is not there exits 2 with one Vietnamese line, not a traceback."""
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    env = {**os.environ, "RADIO_DATA_DIR": str(tmp_path / "serve"), "RADIO_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
           "RADIO_HTTP_PORT": str(free_port()), "RADIO_MQTT_CONNECT_TIMEOUT_S": "3"}
    env.pop("RADIO_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "radio.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "không kết nối được broker MQTT" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unknown_zone_or_segment_in_a_filter_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped TDP in a filter is an error naming it, not an empty result that looks like "nothing aired"."""
    assert main(["schedule", "load", str(DEMO)]) == 0
    capsys.readouterr()
    for argv in (["log", "--zone", "tdp-99"], ["schedule", "preview", "--zone", "tdp-99"],
                 ["reconcile", "--from", "2024-01-01", "--to", "2024-01-31", "--zone", "tdp-99"]):
        assert main(argv) == 2, argv
        assert "không tìm thấy tổ dân phố «tdp-99»" in capsys.readouterr().err
    assert main(["log", "--segment", "khong-co"]) == 2
    assert "không tìm thấy chuyên mục «khong-co»" in capsys.readouterr().err


def test_unusable_database_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A database that is down, or a URL that is not one, exits 2 naming the variable; the password is hidden."""
    from tests.conftest import free_port

    monkeypatch.setenv("RADIO_DATABASE_URL", f"postgresql+psycopg://ward:s3cret@127.0.0.1:{free_port()}/radio")
    assert main(["log"]) == 2
    err = capsys.readouterr().err
    assert "RADIO_DATABASE_URL" in err and "s3cret" not in err and "Traceback" not in err
    monkeypatch.setenv("RADIO_DATABASE_URL", "not a url")
    assert main(["log"]) == 2
    assert "RADIO_DATABASE_URL" in capsys.readouterr().err


def test_setting_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """RADIO_CAP_ZONE_MAP must be JSON: anything else exits 2 naming the field."""
    monkeypatch.setenv("RADIO_CAP_ZONE_MAP", "notjson")
    assert main(["log"]) == 2
    assert "cap_zone_map" in capsys.readouterr().err


def test_tts_say_writes_wav_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o x.wav` writes a real WAV of the same audio; an unknown extension is refused and nothing is written."""
    wav = tmp_path / "loa.wav"
    assert main(["tts", "say", "Thông báo lịch tiêm chủng.", "-o", str(wav)]) == 0
    seconds = float(capsys.readouterr().out.split(":")[1].split("giây")[0].strip())
    assert wav.read_bytes()[:4] == b"RIFF"
    assert probe_duration(wav) == pytest.approx(seconds, abs=0.1)
    assert main(["tts", "say", "Thông báo.", "-o", str(tmp_path / "x.flac")]) == 2
    assert ".flac" in capsys.readouterr().err and not (tmp_path / "x.flac").exists()


def test_reconcile_filters_and_pages(capsys: pytest.CaptureFixture[str]) -> None:
    """`radio reconcile` pages the coming occurrences, filters by outcome, and names a bad filter value."""
    import datetime as dt

    assert main(["schedule", "load", str(DEMO)]) == 0
    today = dt.date.today()
    period = ["--from", today.isoformat(), "--to", (today + dt.timedelta(days=7)).isoformat()]
    capsys.readouterr()
    assert main(["reconcile", *period, "--outcome", "future", "--limit", "2", "--page", "1"]) == 0
    out = capsys.readouterr().out
    shown, total = out.rsplit("\n", 2)[-2].split(" dòng")[0].split("/")
    assert shown == "2" and int(total) > 2 and out.count("chưa đến giờ") >= 2
    assert main(["reconcile", *period, "--outcome", "aired"]) == 0
    assert "Không có lượt phát nào" in capsys.readouterr().out
    assert main(["reconcile", *period, "--outcome", "nonsense"]) == 2
    assert "outcome" in capsys.readouterr().err
