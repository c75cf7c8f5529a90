"""The web console in a real browser (Debian's Chromium, headless): what an officer, a leader and an auditor do.

Runs against the real service with simulated loudspeakers (the demo programme). Each scenario saves
screenshots under test-artifacts/screenshots/ (docs/screenshots/ keeps a checked copy).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from radio.models import AudioAsset, Broadcast, BroadcastStatus, Bulletin, Node, Slot, utcnow
from tests.browser.conftest import Console, login, shot
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHORT_SLOT = "nhac-lich-mot-cua"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


def _nodes(console: Console, zone: str | None = None) -> int:
    with console.service.factory() as session:
        query = select(func.count()).select_from(Node)
        return int(session.scalar(query.where(Node.zone_id == zone) if zone else query) or 0)


def _tomorrow(console: Console) -> dt.date:
    return (utcnow().astimezone(console.service.settings.tz) + dt.timedelta(days=1)).date()


def test_login_and_dashboard(ui: Console) -> None:
    """Signed out, every page leads to the login form; signed in, the dashboard shows the ward at a glance."""
    page = ui.page()
    page.goto("/lich-phat")
    assert "/login?next=%2Flich-phat" in page.url
    shot(page, "01-dang-nhap")
    page.get_by_label("Tên đăng nhập").fill("r-officer")
    page.get_by_label("Mật khẩu").fill("sai-mat-khau")
    page.get_by_role("button", name="Đăng nhập").click()
    expect(page.get_by_role("alert")).to_contain_text("Tên đăng nhập hoặc mật khẩu không đúng")

    login(page, "r-officer")
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hôm nay")
    expect(page.locator("header .user")).to_contain_text("r-officer · Cán bộ văn hóa")
    nav = page.get_by_role("navigation", name="Chức năng")
    expect(nav.get_by_role("link")).to_have_text(["Hôm nay", "Bản tin", "Lịch phát", "Thu âm và phát", "Cụm loa",
                                                  "Nhật ký"])  # no "Phát khẩn cấp": officers do not approve
    zones = page.locator("#h-zones + .zone-grid article")
    expect(zones).to_have_count(6)
    expect(page.locator(".zone .nodes .pill")).to_have_count(_nodes(ui))
    expect(page.locator(".zone .nodes .pill", has_text="mất kết nối")).to_have_count(0)
    shot(page, "02-hom-nay")

    page.get_by_role("button", name="Đăng xuất").click()
    page.wait_for_url("**/login")
    expect(page.get_by_role("status")).to_contain_text("Đã đăng xuất")
    page.goto("/")
    assert "/login" in page.url

    auditor = ui.page("auditor")
    expect(auditor.get_by_role("navigation", name="Chức năng").get_by_role("link")).to_have_text(
        ["Hôm nay", "Lịch phát", "Cụm loa", "Nhật ký"])
    auditor.goto("/khan-cap")
    expect(auditor.get_by_role("alert")).to_contain_text("không được dùng chức năng này")


def test_compose_preview_approve_schedule_and_conflict(ui: Console) -> None:
    """Compose, hear the exact audio, submit; the leader approves; schedule it for TDP 1; a clash is shown inline."""
    officer = ui.page("officer")
    officer.goto("/ban-tin")
    officer.get_by_role("link", name="Soạn bản tin mới").click()
    officer.get_by_label("Tiêu đề").fill("Thông báo cắt nước TDP 1")
    officer.get_by_label("Chuyên mục").select_option(label="Chính quyền thân thiện")
    officer.get_by_label("Nội dung").fill("Kính thưa bà con TDP 1! Sáng mai, 7h30 đến 11h, công ty cấp nước tạm "
                                          "ngừng cấp nước để sửa đường ống. Bà con chủ động trữ nước.")
    officer.locator("select[name=voice]").select_option("vi-vn-x-south")
    officer.get_by_label("Tốc độ (từ/phút)").fill("160")
    officer.get_by_role("button", name="Nghe thử").click()
    audio = officer.locator("#preview-audio")
    expect(audio).to_have_attribute("src", re.compile(r"^blob:"))
    expect(officer.locator("#preview-status")).to_contain_text("Âm thanh sẽ phát, dài")
    assert int(audio.get_attribute("data-bytes") or 0) > 2000
    duration = audio.evaluate("""a => a.readyState >= 1 ? a.duration : new Promise((ok, fail) => {
        a.addEventListener('loadedmetadata', () => ok(a.duration)); a.addEventListener('error', () => fail('error')); })""")
    assert duration > 2.0, duration
    shot(officer, "03-soan-ban-tin")
    officer.get_by_role("button", name="Lưu và gửi duyệt").click()
    expect(officer.get_by_role("status").first).to_contain_text("gửi lãnh đạo phê duyệt")
    bulletin_id = officer.url.rsplit("/", 1)[1]
    expect(officer.locator(".page-head .pill")).to_have_text("chờ phê duyệt")

    leader = ui.page("approver")
    leader.goto("/ban-tin")
    queue = leader.locator("#submitted")
    expect(queue).to_contain_text("Thông báo cắt nước TDP 1")
    shot(leader, "04-hang-cho-duyet")
    queue.locator(f"#bt-{bulletin_id}").get_by_role("button", name="Duyệt").click()
    expect(leader.get_by_role("status").first).to_contain_text("Đã phê duyệt")
    with ui.service.factory() as session:
        assert session.get_one(Bulletin, bulletin_id).status == "approved"

    # Schedule it once, tomorrow 09:15, on TDP 1: the inline check says it fits, and it lands in the week.
    day = _tomorrow(ui)
    officer.goto(f"/ban-tin/{bulletin_id}")
    officer.get_by_role("link", name="Đặt lịch phát").click()
    form = officer.locator("#slot-form")
    expect(form.get_by_label("Tên khung giờ")).to_have_value("Thông báo cắt nước TDP 1")
    form.get_by_label("Ngày phát", exact=True).fill(day.isoformat())
    form.get_by_label("Giờ phát", exact=True).fill("09:15")
    form.get_by_label("Chọn tổ dân phố, nhóm loa:").check()
    form.get_by_label("Tổ dân phố số 1").check()
    expect(officer.locator("#slot-check")).to_contain_text("Không trùng lịch", timeout=15_000)
    officer.get_by_role("button", name="Lưu khung giờ").click()
    expect(officer.get_by_role("status").first).to_contain_text("Đã lưu khung giờ")
    assert "zone=tdp-1" in officer.url and f"week={day.isoformat()}" in officer.url
    chip = officer.locator(".week .slot", has_text="Thông báo cắt nước TDP 1")
    expect(chip).to_contain_text("09:15")
    shot(officer, "05-lich-phat-tuan")

    # Another slot at the same time on the same TDP: the clash is shown before saving, and saving is refused.
    officer.goto("/lich-phat/moi?zone=tdp-1")
    form = officer.locator("#slot-form")
    form.get_by_label("Tên khung giờ").fill("Họp tổ dân phố số 1")
    form.get_by_label("Lặp lại").select_option("once")
    form.get_by_label("Ngày phát", exact=True).fill(day.isoformat())
    form.get_by_label("Giờ phát", exact=True).fill("09:15")
    form.get_by_label("Mục 1").select_option(f"b:{bulletin_id}")
    form.get_by_label("Nghỉ các ngày lễ, Tết").uncheck()  # tomorrow may be a holiday
    check = officer.locator("#slot-check")
    expect(check).to_contain_text("Trùng lịch", timeout=15_000)
    expect(check).to_contain_text("trùng giờ với khung")
    shot(officer, "06-khung-gio-trung-lich")
    form.get_by_label("Giờ phát", exact=True).fill("22:00")
    expect(check).to_contain_text("Giờ yên tĩnh", timeout=15_000)
    officer.get_by_role("button", name="Lưu khung giờ").click()
    expect(officer.get_by_role("alert").first).to_contain_text("Chưa lưu")
    with ui.service.factory() as session:
        assert session.scalar(select(func.count()).select_from(Slot).where(Slot.name == "Họp tổ dân phố số 1")) == 0


def test_upload_a_recording_then_the_leader_returns_it_with_a_comment(ui: Console, tmp_path: Path) -> None:
    """A bulletin made from an uploaded file goes to the leader, who returns it with a comment the officer sees."""
    from radio.sound.pipeline import write_chime_file

    clip = write_chime_file(tmp_path / "thong-bao.wav")
    officer = ui.page("officer")
    officer.goto("/ban-tin/moi")
    officer.get_by_label("Tiêu đề").fill("Thông báo họp tổ dân phố (bản thu)")
    officer.locator("input[type=file][name=audio]").set_input_files(str(clip))
    officer.get_by_role("button", name="Lưu và gửi duyệt").click()
    expect(officer.get_by_role("status").first).to_contain_text("gửi lãnh đạo phê duyệt")
    bulletin_id = officer.url.rsplit("/", 1)[1]
    with ui.service.factory() as session:
        row = session.get_one(Bulletin, bulletin_id)
        assert row.status == "submitted" and row.audio_sha256 and not row.text

    leader = ui.page("approver")
    leader.goto("/ban-tin")
    leader.locator(f"#bt-{bulletin_id}").get_by_role("link", name="Xem và trả lại").click()
    leader.get_by_label("Lý do trả lại").fill("Ghi rõ giờ họp và địa điểm ở đầu bản thu.")
    leader.get_by_role("button", name="Trả lại cho cán bộ sửa").click()
    expect(leader.get_by_role("status").first).to_contain_text("Đã trả lại bản tin")

    officer.goto(f"/ban-tin/{bulletin_id}")
    expect(officer.get_by_role("note")).to_contain_text("Lãnh đạo trả lại: Ghi rõ giờ họp và địa điểm")
    expect(officer.locator(".page-head .pill")).to_have_text("bản nháp")


def test_emergency_confirmed_twice_and_followed_live(ui: Console) -> None:
    """The leader types an emergency for the whole ward, confirms twice, and watches every cluster finish."""
    page = ui.page("approver")
    page.get_by_role("navigation", name="Chức năng").get_by_role("link", name="Phát khẩn cấp").click()
    page.get_by_label("Tiêu đề").fill("Cảnh báo giông lốc")
    page.get_by_label("Nội dung sẽ đọc").fill("Chiều nay có giông lốc. Bà con hạn chế ra đường.")
    expect(page.get_by_label("Toàn phường")).to_be_checked()
    shot(page, "07-khan-cap")
    page.get_by_role("button", name="Tiếp tục").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Xác nhận phát khẩn cấp")
    expect(page.locator(".facts")).to_contain_text(f"Toàn phường ({_nodes(ui)} cụm loa)")
    dialogs: list[str] = []

    def confirm(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)
    page.get_by_role("button", name="Phát khẩn cấp ngay").click()  # the required box is not ticked yet
    assert "/khan-cap/phat" not in page.url and not dialogs
    page.get_by_label("Tôi đã kiểm tra nội dung").check()
    shot(page, "08-xac-nhan-khan-cap")
    page.get_by_role("button", name="Phát khẩn cấp ngay").click()
    page.wait_for_url("**/phat/*")
    assert dialogs and "Cảnh báo giông lốc" in dialogs[0]
    dashboard = page.context.new_page()  # while it plays, the dashboard shows it on air, and the clusters playing
    dashboard.goto("/")
    expect(dashboard.locator(".now")).to_contain_text("Cảnh báo giông lốc")
    for _ in range(20):
        if dashboard.locator(".zone .nodes .pill", has_text="đang phát").count():
            break
        dashboard.wait_for_timeout(250)
        dashboard.reload()
    expect(dashboard.locator(".zone .nodes .pill", has_text="đang phát").first).to_be_visible()
    shot(dashboard, "02-hom-nay-dang-phat")
    dashboard.close()
    states = page.locator('#deliveries [data-field="state"]')
    expect(states).to_have_count(_nodes(ui))
    expect(states).to_have_text(["phát xong"] * _nodes(ui), timeout=60_000)
    expect(page.locator("#b-status")).to_have_text("đã phát xong")
    expect(page.locator("#b-finished")).to_have_text(str(_nodes(ui)))
    shot(page, "09-theo-doi-phat")
    broadcast_id = int(page.url.rsplit("/", 1)[1])
    with ui.service.factory() as session:
        row = session.get_one(Broadcast, broadcast_id)
        assert (row.kind, row.priority, row.status) == ("emergency", "emergency", BroadcastStatus.COMPLETED)


def test_record_from_the_microphone_and_air_it(ui: Console, tmp_path: Path) -> None:
    """Record with the (fake) microphone, listen back, save; an admin airs it now on TDP 2 and sees it play."""
    page = ui.page("admin")
    page.goto("/thu-am")
    page.get_by_label("Tên bản thu").first.fill("Thông báo họp tổ dân phố số 2")
    page.get_by_role("button", name="Bắt đầu thu").click()
    expect(page.locator("#rec-time")).to_have_text("0:02", timeout=10_000)
    page.wait_for_timeout(600)
    page.get_by_role("button", name="Dừng").click()
    played = page.locator("#rec-audio")
    expect(played).to_be_visible()
    expect(played).to_have_attribute("src", re.compile(r"^blob:"))
    shot(page, "10-thu-am")
    page.get_by_role("button", name="Lưu bản thu").click()
    page.wait_for_url("**/thu-am?ban_thu=*")
    asset_id = page.url.split("ban_thu=", 1)[1].split("#")[0]
    with ui.service.factory() as session:
        asset = session.get_one(AudioAsset, asset_id)
        assert asset.name == "Thông báo họp tổ dân phố số 2" and 2.0 <= asset.duration_s <= 6.0, asset.duration_s
    expect(page.locator("#ban-thu audio")).to_have_attribute("src", f"/audio/{asset.sha256}.mp3")
    shot(page, "11-ban-thu-phat-ngay")
    form = page.locator("#air-form")
    form.get_by_label("Chọn tổ dân phố:").check()
    form.get_by_label("Tổ dân phố số 2").check()
    page.once("dialog", lambda d: d.accept())
    form.get_by_role("button", name="Phát ngay").click()
    page.wait_for_url("**/phat/*")
    states = page.locator('#deliveries [data-field="state"]')
    expect(states).to_have_text(["phát xong"] * _nodes(ui, "tdp-2"), timeout=60_000)
    with ui.service.factory() as session:
        row = session.get_one(Broadcast, int(page.url.rsplit("/", 1)[1]))
        assert (row.kind, row.priority, row.status) == ("manual", "normal", BroadcastStatus.COMPLETED)
        assert {d.node_id for d in row.deliveries} == set(session.scalars(select(Node.id).where(Node.zone_id == "tdp-2")))

    # An officer may record and schedule, but airing at once is for a leader.
    officer = ui.page("officer")
    officer.goto(f"/thu-am?ban_thu={asset_id}")
    expect(officer.get_by_role("link", name="Đặt lịch phát")).to_be_visible()
    expect(officer.get_by_role("button", name="Phát ngay")).to_have_count(0)


def test_filter_the_log_and_export(ui: Console) -> None:
    """The auditor filters the as-run log by TDP, outcome and date, and downloads the same view as CSV."""
    service = ui.service
    assert service.broadcaster is not None
    with service.factory() as session:
        done = session.scalar(select(func.count()).select_from(Broadcast)
                              .where(Broadcast.status == BroadcastStatus.COMPLETED))
    if not done:  # run alone: air something first
        broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow())

        def settled() -> bool:
            with service.factory() as session:
                return session.get_one(Broadcast, broadcast_id).status == BroadcastStatus.COMPLETED

        wait_for(settled, 60, "the short slot to air")
    today = utcnow().astimezone(service.settings.tz).date().isoformat()
    page = ui.page("auditor")
    page.get_by_role("navigation", name="Chức năng").get_by_role("link", name="Nhật ký").click()
    filters = page.get_by_role("search", name="Lọc nhật ký")
    filters.get_by_label("Từ ngày").fill(today)
    filters.get_by_label("Đến ngày").fill(today)
    filters.get_by_label("Tổ dân phố").select_option("tdp-2")
    filters.get_by_label("Kết quả").select_option("completed")
    filters.get_by_role("button", name="Lọc").click()
    page.wait_for_url(re.compile(r"tdp=tdp-2"))
    rows = page.locator("table.log tbody.entry")
    assert rows.count() >= 1
    expect(rows.locator("tr:first-child .pill").first).to_have_text("đã phát xong")
    for i in range(rows.count()):
        expect(rows.nth(i).locator("tr:first-child .pill").first).to_have_text("đã phát xong")
    rows.first.locator("summary").click()
    expect(rows.first.locator(".deliveries")).to_contain_text("Tổ dân phố số 2")
    shot(page, "12-nhat-ky")
    with page.expect_download() as download:
        page.get_by_role("link", name="Tải CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("Mã,Giờ phát,Nội dung") and len(lines) == rows.count() + 1
    assert all("đã phát xong" in line for line in lines[1:])

    filters = page.get_by_role("search", name="Lọc nhật ký")
    filters.get_by_label("Kết quả").select_option("missed")
    filters.get_by_role("button", name="Lọc").click()
    expect(page.locator("table.log")).to_contain_text("Không có lượt phát nào khớp bộ lọc")


def test_every_page_reads_well_on_desktop_and_phone(ui: Console) -> None:
    """Every page answers, and fits a 390 px phone without sideways scrolling; screenshots of each."""
    with ui.service.factory() as session:
        broadcast = session.scalars(select(Broadcast.id).order_by(Broadcast.id.desc())).first()
    page = ui.page("admin")
    pages = {"13-ban-tin": "/ban-tin", "14-ban-tin-xem": "/ban-tin/dvc-truc-tuyen", "15-lich-phat-tdp": "/lich-phat",
             "16-khung-gio": "/lich-phat/khu-cho-cuoi-tuan", "17-cum-loa": "/cum-loa",
             "18-cum-loa-chi-tiet": "/cum-loa/loa-tdp2-a", "19-hom-nay-quan-tri": "/"}
    if broadcast:
        pages["20-luot-phat"] = f"/phat/{broadcast}"
    for name, url in pages.items():
        response = page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        expect(page.locator("main h1")).to_be_visible()
        shot(page, name)


def test_pages_work_without_javascript(ui: Console) -> None:
    """Without JavaScript: log in, read, check a slot with the "Kiểm tra" button, hear a preview, filter the log."""
    page = ui.page(javascript=False)
    login(page, "r-officer")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hôm nay")
    page.goto("/lich-phat/moi")
    form = page.locator("#slot-form")
    form.get_by_label("Tên khung giờ").fill("Thông báo buổi tối")
    form.get_by_label("Giờ phát", exact=True).fill("22:30")
    form.get_by_label("Thứ 2").check()
    form.get_by_label("Mục 1").select_option("b:nhac-lich-mot-cua")
    form.get_by_role("button", name="Kiểm tra").click()
    expect(page.locator("#slot-check")).to_contain_text("Giờ yên tĩnh")
    expect(page.get_by_label("Tên khung giờ")).to_have_value("Thông báo buổi tối")  # what was typed is kept

    page.goto("/ban-tin/nhac-lich-mot-cua")
    page.get_by_role("button", name="Nghe thử").click()
    src = page.locator("#preview-audio").get_attribute("src") or ""
    assert re.fullmatch(r"/audio/[0-9a-f]{64}\.mp3", src), src
    audio = page.request.get(src)
    assert audio.ok and audio.headers["content-type"] == "audio/mpeg" and len(audio.body()) > 2000

    page.goto("/nhat-ky?ket_qua=not_aired")
    expect(page.get_by_label("Kết quả")).to_have_value("not_aired")
