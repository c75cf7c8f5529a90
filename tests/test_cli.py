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
    assert "slots: 10 created" in capsys.readouterr().out
    assert main(["schedule", "load", str(DEMO)]) == 0
    assert "slots: 0 created, 0 updated, 10 unchanged" in capsys.readouterr().out
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
