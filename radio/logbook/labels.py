"""Vietnamese labels for statuses shown to officers (console, pages, reports), and reasons in Vietnamese."""

from __future__ import annotations

import datetime as dt
import re

BROADCAST_VI = {
    "preparing": "đang chuẩn bị", "on_air": "đang phát", "completed": "đã phát xong", "partial": "phát một phần",
    "failed": "lỗi", "not_aired": "không phát", "missed": "bị lỡ",
}
BULLETIN_VI = {"draft": "bản nháp", "submitted": "chờ phê duyệt", "approved": "đã phê duyệt"}
DELIVERY_VI = {
    "issued": "đã gửi", "received": "đã nhận", "ready": "sẵn sàng", "playing": "đang phát", "finished": "phát xong",
    "failed": "lỗi", "rejected": "từ chối", "expired": "hết hạn", "missed": "bị lỡ",
}

# What nodes and the service write in English in reasons (radio/node/agent.py, radio/broadcast.py), in the
# words reports use; a command id or an error text after the pattern is kept as it is.
_REASONS_VI: list[tuple[re.Pattern[str], str]] = [(re.compile(p, re.IGNORECASE), vi) for p, vi in [
    (r"\bmissed: offline\b", "cụm loa mất kết nối"),
    (r"\bpreempted by emergency command (\S+)", r"bị ngắt do lệnh phát khẩn cấp \1"),
    (r"\bpreempted by priority command (\S+)", r"bị ngắt do bản tin ưu tiên (lệnh \1)"),
    (r"\bpreempted by normal command (\S+)", r"bị ngắt do lệnh phát \1"),
    (r"\bpreempted by emergency\b", "bị ngắt do phát khẩn cấp"),
    (r"\bpreempted by priority\b", "bị ngắt do bản tin ưu tiên"),
    (r"\binterrupted: the node restarted during playback\b", "bị gián đoạn: cụm loa khởi động lại khi đang phát"),
    (r"\bvalid_until passed while the node was down\b", "hết hạn khi cụm loa không hoạt động"),
    (r"\bvalid_until passed before start\b", "hết hạn trước giờ phát"),
    (r"\bvalid_until passed while emergency command (\S+) played\b", r"hết hạn trong khi lệnh khẩn cấp \1 đang phát"),
    (r"\bvalid_until passed while priority command (\S+) played\b", r"hết hạn trong khi bản tin ưu tiên \1 đang phát"),
    (r"\bvalid_until passed while \w+ command (\S+) played\b", r"hết hạn trong khi lệnh \1 đang phát"),
    (r"\barrived after valid_until\b", "lệnh đến sau thời hạn"),
    (r"\bwhile (\S+) played\b", r"trong khi lệnh \1 đang phát"),
    (r"\bcould not announce: ", "không phát được thông báo: "),
    (r"\bplayback failed: ", "lỗi phát âm thanh: "),
    (r"\bunsupported command type (\S+)", r"loại lệnh không hỗ trợ \1"),
    (r"\bplay command without audio\b", "lệnh phát thiếu âm thanh"),
    (r"\brelay command without stream\b", "lệnh tiếp âm thiếu luồng"),
    (r"\bvolume command without volume\b", "lệnh âm lượng thiếu mức âm lượng"),
]]
_UTC_TIME = re.compile(r"\b(\d{1,2}):(\d{2}) UTC\b")


def reason_vi(reason: str | None, tz: dt.tzinfo | None = None, on: dt.datetime | None = None) -> str:
    """A reason for a report: known English phrases in Vietnamese; ``HH:MM UTC`` in the site's time
    (``tz``; the UTC offset of the day ``on``, the broadcast's instant)."""
    text = reason or ""
    for pattern, vi in _REASONS_VI:
        text = pattern.sub(vi, text)
    if tz is not None:
        day = (on or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()

        def local(m: re.Match[str]) -> str:
            at = dt.datetime.combine(day, dt.time(int(m[1]) % 24, int(m[2])), tzinfo=dt.UTC).astimezone(tz)
            return f"{at:%H:%M} (giờ Việt Nam)"

        text = _UTC_TIME.sub(local, text)
    return text
