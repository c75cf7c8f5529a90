"""The speech API (radio.web.speech_api) through FastAPI's TestClient on a real app, store and lexicon files.

The app is the real one from ``create_app`` (not started: no broker is needed for these routes), with
the speech router included as ``app.py`` does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from radio.service import Service
from radio.settings import Settings
from radio.sound.ffmpeg import AudioSegment, probe_duration
from radio.speech.engines import EspeakEngine, register_engine, unregister_engine
from radio.speech.lexicon import Lexicon, default_lexicon, local_lexicon_path, site_lexicon
from radio.speech.prepare import prepare_speech
from radio.web.app import create_app
from tests.conftest import role_headers


class RecordingEngine:
    """espeak, recording the exact text each call is given (the normalised sentence)."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = EspeakEngine()
        self.texts: list[str] = []

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        self.texts.append(text)
        return self.inner.synthesize(text, voice=voice, rate=rate)


def build_app(settings: Settings) -> FastAPI:
    return create_app(Service(settings), manage=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_bulletin_chars=2000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = build_app(settings)
    with TestClient(app) as test_client:
        test_client.headers.update(role_headers(app.state.service)["admin"])
        yield test_client


@pytest.fixture
def recording() -> Iterator[RecordingEngine]:
    engine = RecordingEngine()
    register_engine("recording", lambda settings: engine)
    yield engine
    unregister_engine("recording")


def error_fields(response: object) -> list[str]:
    """The field names a 422 response points at (pydantic's loc, or our 'field: message')."""
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    if isinstance(detail, list):
        return [str(err["loc"][-1]) for err in detail]
    return [detail.split(":", 1)[0]]


# --- lexicon -------------------------------------------------------------------------------------------

def test_get_lexicon_lists_shipped_entries_with_the_version(client: TestClient, settings: Settings) -> None:
    """GET /lexicon returns every shipped entry, marked 'shipped', and the version used in cache keys."""
    body = client.get("/api/v1/lexicon").json()
    entries = {e["written"]: e for e in body["entries"]}
    assert entries["UBND"] == {"written": "UBND", "spoken": "ủy ban nhân dân", "source": "shipped"}
    assert body["count"] == len(default_lexicon()) == len(entries)
    assert body["version"] == site_lexicon(settings).version == default_lexicon().version
    assert body["local_file"] == str(local_lexicon_path(settings)) and body["problem"] is None


def test_post_adds_a_local_entry_used_by_the_next_normalisation(client: TestClient, settings: Settings) -> None:
    """A new entry is saved to <data_dir>/lexicon.local.tsv, changes the version and is read at once."""
    before = client.get("/api/v1/lexicon").json()["version"]
    text = "Họp BQLDA lúc 8h."
    assert "dự án" not in client.get("/api/v1/tts/normalize", params={"text": text}).json()["spoken"]
    response = client.post("/api/v1/lexicon", json={"written": " BQLDA ", "spoken": "ban quản lý dự án"})
    assert response.status_code == 200
    change = response.json()
    assert change["entry"] == {"written": "BQLDA", "spoken": "ban quản lý dự án", "source": "local"}
    assert change["replaced"] is False and change["version"] != before
    assert change["heard"] == "ban quản lý dự án"
    assert Lexicon.load(local_lexicon_path(settings)).entries == {"BQLDA": "ban quản lý dự án"}
    spoken = client.get("/api/v1/tts/normalize", params={"text": text}).json()
    assert spoken == {"text": text, "spoken": "họp ban quản lý dự án lúc tám giờ."}
    listed = {e["written"]: e["source"] for e in client.get("/api/v1/lexicon").json()["entries"]}
    assert listed["BQLDA"] == "local" and listed["UBND"] == "shipped"


def test_local_entry_overrides_shipped_without_touching_the_shipped_file(
    client: TestClient, settings: Settings,
) -> None:
    """Posting a shipped written form replaces its reading at this site only; the shipped file is unchanged."""
    from radio.settings import AUDIO_ASSETS

    shipped = (AUDIO_ASSETS / "lexicon.vi.tsv").read_bytes()
    change = client.post("/api/v1/lexicon", json={"written": "UBND", "spoken": "ủy ban"}).json()
    assert change["replaced"] is True and change["entry"]["source"] == "local"
    assert client.get("/api/v1/tts/normalize", params={"text": "UBND phường"}).json()["spoken"] == "ủy ban phường"
    assert (AUDIO_ASSETS / "lexicon.vi.tsv").read_bytes() == shipped
    assert default_lexicon().get("UBND") == "ủy ban nhân dân"


def test_new_entry_changes_the_audio_cache_key(client: TestClient, recording: RecordingEngine) -> None:
    """After an entry is added, the same bulletin is synthesised again with the new reading."""
    text = "Lịch họp của BQLDA phường."
    first = client.post("/api/v1/tts/preview", json={"text": text, "engine": "recording"})
    assert client.post("/api/v1/tts/preview", json={"text": text, "engine": "recording"}).headers[
        "X-Audio-Cached"] == "true"
    client.post("/api/v1/lexicon", json={"written": "BQLDA", "spoken": "ban quản lý dự án"})
    second = client.post("/api/v1/tts/preview", json={"text": text, "engine": "recording"})
    assert second.headers["X-Audio-Cached"] == "false"
    assert second.headers["X-Audio-Sha256"] != first.headers["X-Audio-Sha256"]
    assert recording.texts[-1] == "lịch họp của ban quản lý dự án phường."


@pytest.mark.parametrize("body,field", [
    ({"written": "", "spoken": "không"}, "written"),
    ({"written": "A\tB", "spoken": "a b"}, "written"),
    ({"written": "   ", "spoken": "trống"}, "written"),
    ({"written": "#tag", "spoken": "thẻ"}, "written"),
    ({"written": "KP", "spoken": "khu\nphố"}, "spoken"),
    ({"written": "KP", "spoken": "x" * 101}, "spoken"),
    ({"written": "KP"}, "spoken"),
    ({"written": "KP", "spoken": "  "}, "spoken"),
])
def test_bad_entries_are_422_naming_the_field(
    client: TestClient, settings: Settings, body: dict[str, str], field: str,
) -> None:
    """Empty, multi-line, too long, comment-like or missing fields are 422 naming the field; nothing is saved."""
    response = client.post("/api/v1/lexicon", json=body)
    assert response.status_code == 422
    assert error_fields(response) == [field]
    assert not local_lexicon_path(settings).exists()


def test_malformed_local_file_is_reported_and_not_overwritten(client: TestClient, settings: Settings) -> None:
    """A broken hand edit leaves the shipped entries in use, is reported by GET and blocks POST with 409."""
    path = local_lexicon_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("KP\tkhu phố\nno tab here\n", encoding="utf-8")
    body = client.get("/api/v1/lexicon").json()
    assert body["problem"] is not None and ":2:" in body["problem"]
    assert body["version"] == default_lexicon().version
    response = client.post("/api/v1/lexicon", json={"written": "TDP", "spoken": "tổ dân phố"})
    assert response.status_code == 409 and "sửa hoặc xóa" in response.json()["detail"]
    assert path.read_text(encoding="utf-8") == "KP\tkhu phố\nno tab here\n"


def test_hand_edits_of_the_local_file_are_picked_up(client: TestClient, settings: Settings) -> None:
    """Editing lexicon.local.tsv directly (another process) is seen on the next request, no restart."""
    client.post("/api/v1/lexicon", json={"written": "KP", "spoken": "khu phố"})
    path = local_lexicon_path(settings)
    path.write_text(path.read_text(encoding="utf-8") + "TDP\ttổ dân phố\n", encoding="utf-8")
    assert client.get("/api/v1/tts/normalize", params={"text": "TDP 5"}).json()["spoken"] == "tổ dân phố năm"


def test_delete_removes_only_local_entries(client: TestClient, settings: Settings) -> None:
    """DELETE drops an officer entry (the shipped reading returns); shipped entries 409; unknown ones 404."""
    client.post("/api/v1/lexicon", json={"written": "UBND", "spoken": "ủy ban"})
    assert client.delete("/api/v1/lexicon/UBND").status_code == 204
    assert client.get("/api/v1/tts/normalize", params={"text": "UBND"}).json()["spoken"] == "ủy ban nhân dân"
    assert Lexicon.load(local_lexicon_path(settings)).entries == {}
    assert client.delete("/api/v1/lexicon/UBND").status_code == 409
    assert client.delete("/api/v1/lexicon/KHÔNGCÓ").status_code == 404


def test_concurrent_posts_lose_no_entry(client: TestClient, settings: Settings) -> None:
    """Twenty entries posted at once all end up in the local file (the read-modify-write is locked)."""
    def post(n: int) -> int:
        return client.post("/api/v1/lexicon", json={"written": f"MÃ{n}", "spoken": f"mã số {n}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, range(20))) == {200}
    assert len(Lexicon.load(local_lexicon_path(settings))) == 20


# --- normalise and engines -----------------------------------------------------------------------------

def test_normalize_endpoint_and_its_validation(client: TestClient) -> None:
    """GET /tts/normalize returns the spoken form; a missing, empty or over-long text is 422 naming text."""
    body = client.get("/api/v1/tts/normalize", params={"text": "Họp lúc 17h30 ngày 2/9."}).json()
    assert body["spoken"] == "họp lúc mười bảy giờ ba mươi phút ngày mùng hai tháng chín."
    for params in ({}, {"text": ""}, {"text": "a" * 2001}):
        response = client.get("/api/v1/tts/normalize", params=params)
        assert response.status_code == 422 and error_fields(response) == ["text"]


def test_engines_endpoint_lists_engines_voices_and_defaults(client: TestClient, settings: Settings) -> None:
    """GET /tts/engines names every engine with its voices, and the site's default engine, voice and rate."""
    body = client.get("/api/v1/tts/engines").json()
    voices = {e["name"]: e["voices"] for e in body["engines"]}
    assert {"espeak", "gtts", "piper"} <= set(voices)
    assert "vi-vn-x-south" in voices["espeak"]
    assert (body["default_engine"], body["default_voice"], body["default_rate"]) == (
        settings.tts_engine, settings.tts_voice, settings.tts_rate)


# --- preview -------------------------------------------------------------------------------------------

def test_preview_returns_exactly_the_audio_that_would_air(client: TestClient, settings: Settings) -> None:
    """The preview MP3 is byte for byte what prepare_speech makes for the broadcast, with its headers."""
    text = "UBND phường thông báo: sáng 2/9 có tiêm chủng.\n\nĐề nghị bà con đưa trẻ đến đúng giờ."
    response = client.post("/api/v1/tts/preview", json={"text": text, "voice": "vi-vn-x-south", "rate": 170})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    data = response.content
    assert data[:3] == b"ID3" or data[0] == 0xFF
    sha = hashlib.sha256(data).hexdigest()
    assert response.headers["X-Audio-Sha256"] == sha
    assert response.headers["X-Audio-Engine"] == "espeak" and "X-Audio-Fallback" not in response.headers
    on_air = prepare_speech([text], settings, voice="vi-vn-x-south", rate=170)
    assert on_air.cached and on_air.sha256 == sha
    assert float(response.headers["X-Audio-Duration"]) == pytest.approx(probe_duration(on_air.path), abs=0.01)


def test_preview_reports_a_fallback_in_an_ascii_header(client: TestClient, settings: Settings) -> None:
    """When Piper has no model, espeak speaks and X-Audio-Fallback carries the percent-encoded reason."""
    app = build_app(settings.model_copy(update={"piper_model": settings.data_dir / "giọng" / "vi.onnx"}))
    with TestClient(app) as piper_client:
        piper_client.headers.update(client.headers)  # same database: the same accounts
        response = piper_client.post("/api/v1/tts/preview", json={"text": "Xin chào.", "engine": "piper"})
    assert response.status_code == 200
    assert response.headers["X-Audio-Engine"] == "espeak"
    raw = response.headers["X-Audio-Fallback"]
    assert raw.isascii() and "%E1%BB%8D" in raw  # "ọ" of "giọng", UTF-8 percent-encoded
    reason = unquote(raw)
    assert reason.startswith("piper: ") and "giọng" in reason and "không tồn tại" in reason


@pytest.mark.parametrize("body,field", [
    ({"text": ""}, "text"),
    ({"text": "   \n "}, "text"),
    ({"text": "!!! ..."}, "text"),
    ({"text": "a" * 2001}, "text"),
    ({}, "text"),
    ({"text": "Xin chào.", "engine": "festival"}, "engine"),
    ({"text": "Xin chào.", "voice": "klingon"}, "voice"),
    ({"text": "Xin chào.", "rate": 10}, "rate"),
])
def test_preview_rejects_bad_requests_with_422_naming_the_field(
    client: TestClient, settings: Settings, body: dict[str, object], field: str,
) -> None:
    """Empty, unspeakable or over-long text, an unknown engine or voice and a bad rate are 422 for that field."""
    response = client.post("/api/v1/tts/preview", json=body)
    assert response.status_code == 422, response.json() if response.status_code != 200 else "audio"
    assert error_fields(response) == [field]


def test_lexicon_changes_are_recorded_in_the_audit_trail(client: TestClient) -> None:
    """POST and DELETE /lexicon append audit records naming who, the action and the entry before and after."""
    from radio.logbook import audit
    from radio.web.speech_api import AUDIT_ENTITY

    assert client.post("/api/v1/lexicon", json={"written": "BQLDA", "spoken": "ban quản lý dự án"}).status_code == 200
    assert client.post("/api/v1/lexicon", json={"written": "UBND", "spoken": "ủy ban"}).status_code == 200
    assert client.delete("/api/v1/lexicon/BQLDA").status_code == 204
    assert client.delete("/api/v1/lexicon/UBND").status_code == 204
    assert client.delete("/api/v1/lexicon/KHÔNGCÓ").status_code == 404  # nothing changed: nothing recorded
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        total, rows = audit.entries(session, entity_type=AUDIT_ENTITY, newest_first=False)
        assert total == 4
        assert {row.actor for row in rows} == {"r-admin"}
        assert {row.action for row in rows} == {audit.SETTINGS_CHANGED}
        changes = [(row.entity_id, row.before, row.after) for row in rows]
        assert changes == [
            ("BQLDA", None, {"written": "BQLDA", "spoken": "ban quản lý dự án", "source": "local"}),
            ("UBND", {"written": "UBND", "spoken": "ủy ban nhân dân", "source": "shipped"},
             {"written": "UBND", "spoken": "ủy ban", "source": "local"}),
            ("BQLDA", {"written": "BQLDA", "spoken": "ban quản lý dự án", "source": "local"}, None),
            ("UBND", {"written": "UBND", "spoken": "ủy ban", "source": "local"},
             {"written": "UBND", "spoken": "ủy ban nhân dân", "source": "shipped"}),
        ]
        assert audit.verify(session).ok


def test_user_facing_errors_are_vietnamese(client: TestClient, settings: Settings) -> None:
    """The messages the console shows as they are (length, engine, unspeakable text, shipped entry) are Vietnamese."""
    def detail(response: object) -> str:
        return str(response.json()["detail"])  # type: ignore[attr-defined]

    too_long = detail(client.post("/api/v1/tts/preview", json={"text": "a" * 2001}))
    assert "dài 2.001 ký tự; giới hạn là 2.000 ký tự" in too_long
    engine = detail(client.post("/api/v1/tts/preview", json={"text": "Xin chào.", "engine": "festival"}))
    assert "không có bộ đọc 'festival'" in engine
    assert "không có gì để đọc" in detail(client.post("/api/v1/tts/preview", json={"text": "!!! ..."}))
    assert "mục có sẵn" in detail(client.delete("/api/v1/lexicon/UBND"))
