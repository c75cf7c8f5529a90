"""Input the database or the calendar cannot hold is the caller's mistake (422), never a server error (500).

On PostgreSQL a NUL character in any text made the driver raise ``DataError`` (a 500, reachable signed
out through the login form); huge numbers and dates raised ``OverflowError``. Now NUL characters are
refused before any handler runs, and the app maps ``DataError``/``OverflowError`` to a 422: JSON for the
API, a Vietnamese error page for the console. Oversized uploads are refused naming their field.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from radio.db import migrate
from radio.logbook.audit import AuditEntry
from radio.models import AudioAsset, Bulletin
from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from tests.conftest import DEMO, role_headers

NUL_VI = "ký tự NUL"


@pytest.fixture
def app(db_url: str, make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The app on SQLite and on PostgreSQL (where NUL in text is a driver error), with the demo programme."""
    service = Service(make_settings(database_url=db_url, max_upload_mb=0.01))
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    headers = role_headers(service)
    with TestClient(create_app(service, manage=False), raise_server_exceptions=False) as client:
        yield client, headers
    service.engine.dispose()


def json_422(r: object, *words: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:300])  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/json")  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, list) and detail[0]["type"] == "value_error"
    for word in words:
        assert word in detail[0]["msg"], detail


def page_422(r: object, *words: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:300])  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]
    assert "Dữ liệu không hợp lệ" in r.text  # type: ignore[attr-defined]  # the console's error page
    for word in words:
        assert word in r.text, r.text[:2000]  # type: ignore[attr-defined]


# NUL characters ------------------------------------------------------------------------------------
def test_nul_in_the_login_is_refused_signed_out(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """The anonymous 500 of the audit: a user name "a\\0" at both login routes."""
    client, _ = app
    json_422(client.post("/api/v1/login", json={"username": "a\x00", "password": "mat-khau-thu"}), NUL_VI)
    json_422(client.post("/api/v1/login", json={"username": "r-officer", "password": "mat\x00khau"}), NUL_VI)
    page_422(client.post("/login", data={"username": "a\x00", "password": "x", "csrf_token": "t"}), NUL_VI)
    page_422(client.post("/login", content=b"username=a%00&password=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), NUL_VI)


NUL_IN_THE_API: list[tuple[str, str, dict[str, object]]] = [
    ("POST", "/api/v1/bulletins", {"json": {"id": "tin-nul", "title": "Tiêu đề\x00", "text": "Nội dung."}}),
    ("POST", "/api/v1/bulletins", {"json": {"id": "tin-nul", "title": "Tiêu đề", "text": "Nội\u0000 dung."}}),
    ("PUT", "/api/v1/bulletins/nhac-lich-mot-cua", {"json": {"title": "x\x00", "text": "y"}}),
    ("POST", "/api/v1/lexicon", {"json": {"written": "UBND\x00", "spoken": "uỷ ban"}}),
    ("POST", "/api/v1/tokens", {"json": {"name": "a\x00"}}),
    ("GET", "/api/v1/bulletins/a%00b", {}),
    ("GET", "/api/v1/audit?actor=a%00", {}),
    ("GET", "/api/v1/tts/normalize?text=a%00", {}),
]


def test_nul_anywhere_in_the_api_is_refused(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, headers = app
    for method, url, kwargs in NUL_IN_THE_API:
        json_422(client.request(method, url, headers=headers["admin"], **kwargs), NUL_VI)  # type: ignore[arg-type]


def test_nul_in_console_forms_and_addresses_is_refused(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, headers = app
    admin = headers["admin"]
    page_422(client.post("/ban-tin/moi", data={"title": "a\x00", "text": "b"}, headers=admin), NUL_VI)
    page_422(client.get("/ban-tin/a%00", headers=admin), NUL_VI)
    page_422(client.get("/nhat-ky?q=a%00", headers=admin), NUL_VI)


def test_nul_in_a_multipart_text_field_is_not_a_server_error(
    app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    """Multipart bodies are not scanned (audio has zero bytes); their text reaches the database handler: 422."""
    client, headers = app
    r = client.post("/ban-tin/moi", data={"title": "Tiêu đề\x00", "text": "Nội dung."},
                    files={"audio": ("", b"", "application/octet-stream")}, headers=headers["admin"],
                    follow_redirects=False)
    assert r.status_code in (303, 422), r.text[:300]  # SQLite stores it; PostgreSQL refuses it: never a 500
    if r.status_code == 422:
        page_422(r)


def test_an_escaped_backslash_before_u0000_is_ordinary_text(
    app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    """Only a real NUL is refused: the six characters \\u0000 written in a bulletin are kept as they are."""
    client, headers = app
    r = client.post("/api/v1/bulletins", content=b'{"id": "tin-mau", "title": "a\\\\u0000", "text": "b"}',
                    headers={**headers["admin"], "Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["title"] == "a\\u0000"


def test_a_refused_nul_never_reaches_the_database(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """Refused before the handler: no login audited, nothing stored."""
    client, headers = app
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        before = session.scalar(select(func.count()).select_from(AuditEntry))
    client.post("/api/v1/login", json={"username": "a\x00", "password": "x"})
    client.post("/api/v1/bulletins", json={"id": "tin-nul", "title": "a\x00", "text": "b"}, headers=headers["admin"])
    with service.factory() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == before
        assert session.get(Bulletin, "tin-nul") is None


# numbers and dates out of range ------------------------------------------------------------------------
def test_out_of_range_numbers_and_dates_in_pages(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, headers = app
    for url in ("/phat/99999999999999999999", "/phat/9223372036854775808", "/lich-phat?week=9999-12-31",
                "/lich-phat?week=0001-01-01"):
        r = client.get(url, headers=headers["admin"])
        assert r.status_code in (200, 404, 422), (url, r.status_code, r.text[:300])
        if r.status_code == 422:
            page_422(r)


def test_the_overflows_of_the_audit_are_422_pages(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, headers = app
    page_422(client.get("/phat/99999999999999999999", headers=headers["admin"]))
    page_422(client.get("/lich-phat?week=9999-12-31", headers=headers["admin"]))


def test_out_of_range_numbers_in_the_api(app: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    client, headers = app
    for url in ("/api/v1/broadcasts/99999999999999999999", "/api/v1/broadcasts/9223372036854775807",
                "/api/v1/broadcasts?limit=99999999999999999999"):
        r = client.get(url, headers=headers["admin"])
        assert r.status_code in (404, 422), (url, r.status_code, r.text[:300])


# upload size ------------------------------------------------------------------------------------------
def wav(seconds: float) -> bytes:
    """A real 16-bit mono WAV tone: refused for its size, not for its format."""
    rate = 8000
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
                      for n in range(int(rate * seconds)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def test_an_upload_over_the_limit_is_refused_naming_its_field(
    app: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    """max_upload_mb = 0.01 (10 KiB): a 16 KB recording is refused at the API, the bulletin form and the
    recording page; a 4 KB one passes."""
    client, headers = app
    officer = headers["officer"]
    big, small = wav(1.0), wav(0.25)
    assert len(big) > 0.01 * 1024 * 1024 > len(small)
    r = client.post("/api/v1/assets", data={"id": "qua-lon", "name": "Quá lớn"},
                    files={"file": ("to.wav", big, "audio/wav")}, headers=officer)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"], r.text
    assert "giới hạn 0.01 MB" in r.json()["detail"][0]["msg"]
    r = client.post("/ban-tin/moi", data={"title": "Có tệp quá lớn", "text": "Nội dung."},
                    files={"audio": ("to.wav", big, "audio/wav")}, headers=officer)
    assert r.status_code == 422 and "Tệp âm thanh: tệp lớn hơn giới hạn 0.01 MB" in r.text
    r = client.post("/thu-am", data={"name": "Bản thu quá lớn"}, files={"file": ("to.wav", big, "audio/wav")},
                    headers=officer)
    assert r.status_code == 422 and "Tệp âm thanh: tệp lớn hơn giới hạn 0.01 MB" in r.text
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        assert session.get(AudioAsset, "qua-lon") is None
        assert session.scalar(select(func.count()).select_from(Bulletin).where(Bulletin.title == "Có tệp quá lớn")) == 0
    r = client.post("/api/v1/assets", data={"id": "vua-du", "name": "Vừa đủ"},
                    files={"file": ("nho.wav", small, "audio/wav")}, headers=officer)
    assert r.status_code == 201, r.text
