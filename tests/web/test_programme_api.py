"""Programme API: bulletin CRUD and approval, audio uploads by content, calendar export, errors naming fields."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from tests.conftest import DEMO, role_headers


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The app over a migrated database with the demo programme; no broker needed for these routes."""
    from radio.db import migrate

    service = Service(make_settings())
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    with TestClient(create_app(service, manage=False)) as client:
        client.headers.update(role_headers(service)["admin"])
        yield client
    service.engine.dispose()


def tone_wav(seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10\x00\xf0" * int(4000 * seconds))
    return buf.getvalue()


def test_bulletin_lifecycle_draft_submit_approve_edit(client: TestClient) -> None:
    """draft → submitted → approved; editing approved text returns it to draft; return needs a comment."""
    body = {"id": "cat-nuoc", "title": "Thông báo cắt nước", "text": "TDP 3 tạm ngừng cấp nước từ 8h đến 11h."}
    r = client.post("/api/v1/bulletins", json=body)
    assert r.status_code == 201 and r.json()["status"] == "draft"
    assert client.post("/api/v1/bulletins", json=body).status_code == 409
    assert client.post("/api/v1/bulletins/cat-nuoc/approve").status_code == 409  # not submitted yet
    assert client.post("/api/v1/bulletins/cat-nuoc/submit").json()["status"] == "submitted"
    r = client.post("/api/v1/bulletins/cat-nuoc/approve")
    assert r.json()["status"] == "approved" and r.json()["approved_by"] == "r-admin"
    edit = {"title": "Thông báo cắt nước", "text": "TDP 3 tạm ngừng cấp nước từ 8h đến 12h."}
    r = client.put("/api/v1/bulletins/cat-nuoc", json=edit)
    assert r.json()["status"] == "draft" and r.json()["approved_by"] is None
    client.post("/api/v1/bulletins/cat-nuoc/submit")
    r = client.post("/api/v1/bulletins/cat-nuoc/return", json={"comment": ""})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "comment"
    r = client.post("/api/v1/bulletins/cat-nuoc/return", json={"comment": "Ghi rõ ngày."})
    assert r.json()["status"] == "draft" and r.json()["review_comment"] == "Ghi rõ ngày."


@pytest.mark.parametrize(("body", "field"), [
    ({"id": "Bad Id!", "title": "x", "text": "y"}, "id"),
    ({"id": "ok", "title": "", "text": "y"}, "title"),
    ({"id": "ok", "title": "x", "text": "   "}, "text"),
    ({"id": "ok", "title": "x", "text": "y" * 20001}, "text"),
    ({"id": "ok", "title": "x", "text": "y", "rate": 5}, "rate"),
    ({"id": "ok", "title": "x", "text": "y", "surprise": 1}, "surprise"),
])
def test_bad_bulletins_get_422_naming_the_field(client: TestClient, body: dict[str, object], field: str) -> None:
    """Invalid bulletin input is refused with 422 and the offending field named, and nothing is stored."""
    r = client.post("/api/v1/bulletins", json=body)
    assert r.status_code == 422
    assert field in r.text
    assert client.get("/api/v1/bulletins/ok").status_code == 404


def test_bulletin_used_by_a_slot_cannot_be_deleted(client: TestClient) -> None:
    """Deleting a bulletin that a slot plays is refused with the slot named; an unused one is deleted."""
    r = client.delete("/api/v1/bulletins/nhac-lich-mot-cua")
    assert r.status_code == 409 and "nhac-lich-mot-cua" in r.json()["detail"]
    client.post("/api/v1/bulletins", json={"id": "tam", "title": "Tạm", "text": "Thử."})
    assert client.delete("/api/v1/bulletins/tam").status_code == 204
    assert client.get("/api/v1/bulletins/tam").status_code == 404


def test_upload_is_accepted_by_content_not_by_name(client: TestClient) -> None:
    """A WAV named .mp3 is accepted and measured; a text file named .mp3 is refused with 422 on 'file'."""
    r = client.post("/api/v1/assets", data={"id": "tieng-keng", "name": "Tiếng kẻng"},
                    files={"file": ("keng.mp3", tone_wav(2.0), "audio/mpeg")})
    assert r.status_code == 201, r.text
    asset = r.json()
    assert asset["duration_s"] == pytest.approx(2.0, abs=0.1) and len(asset["sha256"]) == 64
    assert client.get(f"/audio/{asset['sha256']}.mp3").status_code == 200
    r = client.post("/api/v1/assets", data={"id": "gia", "name": "Giả"},
                    files={"file": ("gia.mp3", b"ID3 this is not audio at all" * 10, "audio/mpeg")})
    assert r.status_code == 422 and "file" in r.text
    r = client.post("/api/v1/assets", data={"id": "../etc", "name": "x"},
                    files={"file": ("a.wav", tone_wav(), "audio/wav")})
    assert r.status_code == 422


def test_audio_route_refuses_traversal_and_unknown_hashes(client: TestClient) -> None:
    """Audio is served only by a 64-hex hash; anything else is a 404, never a file read."""
    for name in ("..%2F..%2Fetc%2Fpasswd", "0" * 64 + ".mp3", "ABC.mp3", "../radio.db"):
        assert client.get(f"/audio/{name}").status_code == 404


def test_calendar_lists_coming_occurrences_per_zone(client: TestClient) -> None:
    """The iCalendar export has one VEVENT per coming occurrence, filtered by zone, with folded lines."""
    whole = client.get("/api/v1/calendar.ics", params={"days": 7})
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/calendar")
    text = whole.text
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.rstrip().endswith("END:VCALENDAR")
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    tdp4 = client.get("/api/v1/calendar.ics", params={"days": 7, "zone": "tdp-4"}).text
    assert 0 < tdp4.count("BEGIN:VEVENT") < text.count("BEGIN:VEVENT")
    assert "Chuy" in tdp4  # the digital-transformation slot plays on TDP 4


def test_emergency_needs_a_running_broadcaster(client: TestClient) -> None:
    """Without a broker connection an emergency is refused with 503, not a crash."""
    r = client.post("/api/v1/emergency", json={"text": "Bão số 3 đang đến gần."})
    assert r.status_code == 503


def test_programme_api_errors_are_in_vietnamese(client: TestClient) -> None:
    """The conflicts an officer meets in the web console are explained in Vietnamese, naming the thing."""
    body = {"id": "cat-dien", "title": "Cắt điện", "text": "TDP 2 cắt điện từ 7h đến 9h."}
    assert client.post("/api/v1/bulletins", json=body).status_code == 201
    r = client.post("/api/v1/bulletins", json=body)
    assert r.status_code == 409 and r.json()["detail"] == "bản tin «cat-dien» đã tồn tại"
    r = client.post("/api/v1/bulletins/cat-dien/approve")
    assert r.status_code == 409
    assert r.json()["detail"] == ("bản tin «cat-dien» đang ở trạng thái bản nháp; "
                                  "chỉ bản tin đang chờ phê duyệt mới phê duyệt được")
    r = client.post("/api/v1/bulletins/cat-dien/return", json={"comment": "Sửa giờ."})
    assert r.status_code == 409 and "chỉ bản tin đang chờ phê duyệt mới trả lại được" in r.json()["detail"]
    client.post("/api/v1/bulletins/cat-dien/submit")
    r = client.post("/api/v1/bulletins/cat-dien/submit")
    assert r.status_code == 409 and r.json()["detail"] == ("bản tin «cat-dien» đang ở trạng thái chờ phê duyệt; "
                                                           "chỉ bản nháp mới gửi phê duyệt được")
    r = client.delete("/api/v1/bulletins/nhac-lich-mot-cua")
    assert r.status_code == 409 and r.json()["detail"].startswith(
        "bản tin «nhac-lich-mot-cua» đang nằm trong danh sách phát của khung giờ «")
    wav = {"file": ("keng.wav", tone_wav(), "audio/wav")}
    assert client.post("/api/v1/assets", data={"id": "keng", "name": "Kẻng"}, files=wav).status_code == 201
    r = client.post("/api/v1/assets", data={"id": "keng", "name": "Kẻng"}, files=wav)
    assert r.status_code == 409 and r.json()["detail"] == "tệp âm thanh «keng» đã tồn tại"
    r = client.post("/api/v1/emergency", json={"text": "Bão số 3 đang đến gần."})
    assert r.status_code == 503 and r.json()["detail"] == "bộ phát chưa chạy (chưa kết nối được máy chủ MQTT)"
    for english in ("already exists", "only a", "is in the playlist", "not running"):
        assert english not in r.text


SLOT = {"id": "tin-trua", "name": "Bản tin trưa", "time": "11:30", "days": ["mon", "wed"], "zones": ["tdp-3"],
        "play": ["muc-tieu-hai-long-99"]}


@pytest.mark.parametrize(("change", "field", "detail"), [
    ({"from": "2025-03-01", "until": "2025-02-01"}, "until", "2025-02-01 trước ngày bắt đầu (from: 2025-03-01)"),
    ({"days": None}, "days", "ghi days (daily hoặc danh sách các thứ) hoặc dates"),
    ({"zones": "all", "groups": ["loa-khu-cho"]}, "groups", "zones: all đã gồm mọi cụm loa của phường"),
    ({"except": ["31/12/9999"]}, "except", 'ngày "31/12/9999" nằm ngoài khoảng năm 2000–2100'),
    ({"from": "0001-01-01"}, "from", 'ngày "0001-01-01" nằm ngoài khoảng năm 2000–2100'),
])
def test_the_slots_api_refuses_what_the_programme_file_refuses(
    client: TestClient, change: dict[str, object], field: str, detail: str,
) -> None:
    """from after until, neither days nor dates, zones: all with groups, dates outside 2000-2100: the API
    refuses each (the same SlotSpec checks as the file), naming the field, and stores nothing."""
    body = {key: value for key, value in {**SLOT, **change}.items() if value is not None}
    for method, url in (("POST", "/api/v1/slots"), ("POST", "/api/v1/slots/check")):
        r = client.request(method, url, json=body)
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert detail in error["msg"], error
        assert error["msg"].startswith(f"{field}: ") or field in error["loc"], error
    assert client.get("/api/v1/slots/tin-trua").status_code == 404


def test_slots_accepted_by_the_api_export_and_load_back(client: TestClient, tmp_path: Path) -> None:
    """Every slot shape the API accepts is written by export_programme as YAML that the file loader accepts and
    that changes nothing when loaded back."""
    from radio.schedule.loader import export_programme, parse_programme

    shapes = [
        {**SLOT, "id": "nhom", "zones": None, "groups": ["loa-khu-cho"], "time": "12:10"},
        {**SLOT, "id": "mot-lan", "days": None, "dates": ["2099-05-01", "2099-05-02"], "time": "12:20"},
        {**SLOT, "id": "hai-tuan", "every_weeks": 2, "from": "2025-01-06", "until": "2100-12-31",
         "except": ["2099-05-05"], "holidays": "skip", "time": "12:30"},
        {**SLOT, "id": "tiep-am", "days": "daily", "dates": ["2099-06-01"], "time": "12:40", "duration": "9m",
         "play": [{"audio": "nhac-hieu"}, {"relay": "http://127.0.0.1:9/live", "seconds": 90}]},
        {**SLOT, "id": "ca-phuong", "zones": "all", "priority": "ưu tiên", "time": "12:50", "enabled": False},
    ]
    for shape in shapes:
        body = {key: value for key, value in shape.items() if value is not None}
        r = client.post("/api/v1/slots", json=body)
        assert r.status_code == 201, (shape["id"], r.text)
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    path = tmp_path / "exported.yaml"
    path.write_text(export_programme(service.factory), encoding="utf-8")
    parse_programme(path)
    report = load_programme(path, service.factory, settings=service.settings)
    assert not report.changed, str(report)
