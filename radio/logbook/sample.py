"""A small, realistic as-run history for tests and demonstrations of the reports (no MQTT involved).

Two weeks of September 2024 in phường Thọ Xương: four TDPs with six loudspeaker clusters, three
slots, and one of each outcome the reports must explain::

    sang-ngay-thuong  06:30 Mon–Fri, whole ward, Chuyển đổi số, skips public holidays (2–3/9)
        04/09 completed · 05/09 partial (loa-tdp3-b offline) · 06/09 missed (service down)
        09/09 no broadcast row at all · 10/09 completed · 11/09 preempted in TDP 1 by an emergency
        12/09 completed · 13/09 partial (bulletin + 60 s relay; TDP 4 lost the relay after 12 s)
    chieu-t3-t5       17:00 Tue/Thu, TDP 1 and 2, Chính quyền thân thiện, keeps holidays
        03/09 completed · 05/09 completed · 10/09 failed (no cluster reported) · 12/09 completed
    toi-thu-bay       19:00 Sat, whole ward, Cải cách hành chính, bulletin never approved
        07/09 not aired (not approved) · 14/09 future (NOW is 13/09 12:00)
    emergency         11/09 06:31, TDP 1, completed

Inserted directly as rows; :func:`seed` also writes the matching audit entries (slot.created and
bulletin.* before the period, so the reconciliation counts every occurrence in it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from radio.broadcast import occurrence_key
from radio.logbook import audit
from radio.logbook.asrun import PREEMPTED
from radio.models import (
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Delivery,
    DeliveryState,
    Node,
    Priority,
    Segment,
    Slot,
    SlotItem,
    SlotTarget,
    Zone,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
FIRST, LAST = dt.date(2024, 9, 2), dt.date(2024, 9, 15)
NOW = dt.datetime(2024, 9, 13, 12, 0, tzinfo=TZ).astimezone(dt.UTC)
CREATED = dt.datetime(2024, 8, 20, 9, 0, tzinfo=TZ).astimezone(dt.UTC)

ZONES = {
    "tdp-1": ("Tổ dân phố số 1", ["loa-tdp1-a", "loa-tdp1-b"]),
    "tdp-2": ("Tổ dân phố số 2", ["loa-tdp2-a"]),
    "tdp-3": ("Tổ dân phố số 3", ["loa-tdp3-a", "loa-tdp3-b"]),
    "tdp-4": ("Tổ dân phố số 4", ["loa-tdp4-a"]),
}
NODE_NAMES = {
    "loa-tdp1-a": "Cụm loa Nhà văn hóa TDP 1", "loa-tdp1-b": "Cụm loa đầu ngõ TDP 1",
    "loa-tdp2-a": "Cụm loa Nhà văn hóa TDP 2", "loa-tdp3-a": "Cụm loa Nhà văn hóa TDP 3",
    "loa-tdp3-b": "Cụm loa khu chợ TDP 3", "loa-tdp4-a": "Cụm loa Nhà văn hóa TDP 4",
}
ALL_NODES = [n for _name, nodes in ZONES.values() for n in nodes]
SEGMENTS = {"cqtt": "Chính quyền thân thiện", "cchc": "Cải cách hành chính", "cds": "Chuyển đổi số",
            "khan-cap": "Khẩn cấp"}
TEXT_DVC = (
    "Kính thưa bà con Nhân dân trong phường!\n\n"
    "Thực hiện Kế hoạch số 41/KH-UBND ngày 25/02/2024 của UBND phường Thọ Xương về xây dựng chính quyền "
    "thân thiện năm 2024, UBND phường khuyến khích bà con thực hiện thủ tục hành chính qua Cổng dịch vụ công "
    "trực tuyến, không phải đi lại nhiều lần. Bà con chưa thành thạo có thể liên hệ Tổ công nghệ số cộng đồng "
    "ở tổ dân phố để được hướng dẫn tận tình, miễn phí."
)
TEXT_MOT_CUA = (
    "Kính thưa bà con! Đoàn thanh niên phường Thọ Xương cử đoàn viên trực hỗ trợ tại Bộ phận Một cửa vào "
    "thứ Ba và thứ Năm hằng tuần: hướng dẫn lấy số thứ tự, kê khai tờ khai và nộp hồ sơ trực tuyến ngay tại chỗ."
)
TEXT_HAI_LONG = "Phấn đấu 99% người dân hài lòng khi giải quyết thủ tục hành chính tại phường."
TEXT_EMERGENCY = (
    "Thông báo khẩn: do mưa lớn kéo dài, đề nghị bà con tổ dân phố số 1 không đi qua khu vực ngầm tràn "
    "đường Xương Giang cho đến khi có thông báo mới."
)
DURATION = 95.0
EMERGENCY_DURATION = 30.0
RELAY = 60.0


def _at(day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2024, 9, day, hour, minute, tzinfo=TZ).astimezone(dt.UTC)


class _Builder:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.seq = 0

    def broadcast(self, *, slot_id: str | None, title: str, text: str, when: dt.datetime, status: BroadcastStatus,
                  nodes: list[str], outcome: dict[object, tuple[DeliveryState, str | None, float | None]] | None = None,
                  reason: str | None = None, kind: str = "scheduled", priority: str = Priority.NORMAL,
                  duration: float = DURATION, relay_s: float | None = None, key: str | None = None) -> Broadcast:
        """One broadcast; ``outcome`` maps a node (part 0) or (node, part) to (state, reason, played_s)."""
        fired = when + dt.timedelta(seconds=1)
        start = when + dt.timedelta(seconds=4)
        parts = [duration] + ([relay_s] if relay_s else [])
        total = sum(parts)
        b = Broadcast(occurrence_key=key or occurrence_key(slot_id or "x", when), slot_id=slot_id, kind=kind,
                      priority=priority, title=title, text=text if nodes else None, scheduled_at=when, fired_at=fired,
                      start_at=start if nodes else None, completed_at=start + dt.timedelta(seconds=total + 5),
                      status=status, reason=reason, duration_s=total if nodes else None,
                      audio_sha256=hashlib.sha256(text.encode()).hexdigest() if nodes else None,
                      engine="espeak" if nodes else None)
        self.session.add(b)
        self.session.flush()
        part_start = start
        for index, length in enumerate(parts if nodes else []):
            self.seq += 1
            command_id = f"cmd{self.seq:04d}"
            body = {"audio": {"duration_s": length}} if index == 0 else {"stream": {"duration_s": length}}
            self.session.add(Command(id=command_id, broadcast_id=b.id, topic="radio/tho-xuong/cmd/all",
                                     payload={"id": command_id, "type": "play" if index == 0 else "relay", **body},
                                     created_at=fired, valid_until=part_start + dt.timedelta(minutes=10),
                                     published_at=fired + dt.timedelta(milliseconds=40), attempts=1))
            for i, node in enumerate(nodes):
                default = (DeliveryState.FINISHED, None, length)
                state, why, played = (outcome or {}).get((node, index), (outcome or {}).get(node, default)
                                                         if index == 0 else default)
                d = Delivery(broadcast_id=b.id, node_id=node, command_id=command_id, part=index, state=state,
                             reason=why, issued_at=fired)
                if state in (DeliveryState.FINISHED, DeliveryState.FAILED) and played is not None:
                    d.received_at = fired + dt.timedelta(milliseconds=80 + 10 * i)
                    d.ready_at = fired + dt.timedelta(seconds=2)
                    d.started_at = part_start + dt.timedelta(milliseconds=3 * i)
                    d.finished_at = d.started_at + dt.timedelta(seconds=played)
                    d.played_s = played
                elif state == DeliveryState.FAILED:
                    d.received_at = fired + dt.timedelta(milliseconds=90)
                self.session.add(d)
            part_start += dt.timedelta(seconds=length)
        return b


def seed(session: Session) -> None:
    """Insert the sample ward, programme and two weeks of as-run history (see the module docstring)."""
    for zone_id, (name, nodes) in ZONES.items():
        session.add(Zone(id=zone_id, name=name))
        for node in nodes:
            session.add(Node(id=node, zone_id=zone_id, name=NODE_NAMES[node], online=node != "loa-tdp3-b"))
    for seg_id, name in SEGMENTS.items():
        session.add(Segment(id=seg_id, name=name))
    session.flush()
    bulletins = [
        Bulletin(id="dvc-truc-tuyen", segment_id="cds", title="Hướng dẫn thực hiện thủ tục hành chính trên Cổng "
                 "dịch vụ công", text=TEXT_DVC, status=BulletinStatus.APPROVED, updated_at=CREATED),
        Bulletin(id="doan-thanh-nien-mot-cua", segment_id="cqtt", title="Đoàn viên thanh niên hỗ trợ người dân tại "
                 "Bộ phận Một cửa", text=TEXT_MOT_CUA, status=BulletinStatus.APPROVED, updated_at=CREATED),
        Bulletin(id="muc-tieu-hai-long-99", segment_id="cchc", title="Phấn đấu 99% người dân hài lòng",
                 text=TEXT_HAI_LONG, status=BulletinStatus.SUBMITTED, updated_at=CREATED),
    ]
    session.add_all(bulletins)
    slots = [
        Slot(id="sang-ngay-thuong", name="Bản tin sáng ngày thường", segment_id="cds", start_time=dt.time(6, 30),
             weekdays="mon,tue,wed,thu,fri", holidays="skip", valid_from=dt.date(2024, 8, 26)),
        Slot(id="chieu-t3-t5", name="Hỗ trợ người dân tại Bộ phận Một cửa", segment_id="cqtt",
             start_time=dt.time(17, 0), weekdays="tue,thu", holidays="keep", valid_from=dt.date(2024, 8, 26)),
        Slot(id="toi-thu-bay", name="Cải cách hành chính cuối tuần", segment_id="cchc", start_time=dt.time(19, 0),
             weekdays="sat", valid_from=dt.date(2024, 8, 26)),
    ]
    session.add_all(slots)
    session.flush()
    session.add_all([SlotItem(slot_id="sang-ngay-thuong", position=0, bulletin_id="dvc-truc-tuyen"),
                     SlotItem(slot_id="chieu-t3-t5", position=0, bulletin_id="doan-thanh-nien-mot-cua"),
                     SlotItem(slot_id="toi-thu-bay", position=0, bulletin_id="muc-tieu-hai-long-99"),
                     SlotTarget(slot_id="chieu-t3-t5", zone_id="tdp-1"),
                     SlotTarget(slot_id="chieu-t3-t5", zone_id="tdp-2")])
    session.flush()
    for b in bulletins:
        audit.record(session, actor="can-bo-van-hoa", action="bulletin.created", entity_type="bulletin",
                     entity_id=b.id, before=None, after=audit.snapshot(b), at=CREATED)
    for b in bulletins[:2]:
        audit.record(session, actor="chu-tich", action="bulletin.approved", entity_type="bulletin", entity_id=b.id,
                     before={"status": "submitted"}, after={"status": "approved"}, at=CREATED + dt.timedelta(hours=2))
    for s in slots:
        session.refresh(s)
        audit.record(session, actor="can-bo-van-hoa", action="slot.created", entity_type="slot", entity_id=s.id,
                     before=None, after=audit.snapshot(s, {"zone_ids": s.zone_ids}), at=CREATED + dt.timedelta(hours=3))

    build = _Builder(session)
    tdp12 = ZONES["tdp-1"][1] + ZONES["tdp-2"][1]
    morning = "Bản tin sáng ngày thường"
    # Mornings (2 and 3 September are the National Day holidays: skipped by the rule).
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(4, 6, 30),
                    status=BroadcastStatus.COMPLETED, nodes=ALL_NODES)
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(5, 6, 30),
                    status=BroadcastStatus.PARTIAL, nodes=ALL_NODES, reason="5/6 cụm loa phát xong",
                    outcome={"loa-tdp3-b": (DeliveryState.MISSED, "missed: offline", None)})
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(6, 6, 30),
                    status=BroadcastStatus.MISSED, nodes=[], reason="dịch vụ không chạy lúc 23:30 UTC, trễ 1800 giây")
    # 9 September: no row at all (the server was off the whole morning).
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(10, 6, 30),
                    status=BroadcastStatus.COMPLETED, nodes=ALL_NODES)
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(11, 6, 30),
                    status=BroadcastStatus.PARTIAL, nodes=ALL_NODES, reason="4/6 cụm loa phát xong",
                    outcome={n: (DeliveryState.FAILED, PREEMPTED, 55.0) for n in ZONES["tdp-1"][1]})
    build.broadcast(slot_id=None, title="Thông báo khẩn: mưa lớn, ngập ngầm tràn", text=TEXT_EMERGENCY,
                    when=_at(11, 6, 31), status=BroadcastStatus.COMPLETED, nodes=ZONES["tdp-1"][1], kind="emergency",
                    priority=Priority.EMERGENCY, duration=EMERGENCY_DURATION, key="emergency:20240911T063100")
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(12, 6, 30),
                    status=BroadcastStatus.COMPLETED, nodes=ALL_NODES)
    # 13 September: the bulletin, then 60 s relayed from the city station; TDP 4 lost the stream.
    build.broadcast(slot_id="sang-ngay-thuong", title=morning, text=TEXT_DVC, when=_at(13, 6, 30),
                    status=BroadcastStatus.PARTIAL, nodes=ALL_NODES, relay_s=RELAY, reason="5/6 cụm loa phát trọn vẹn",
                    outcome={("loa-tdp4-a", 1): (DeliveryState.FAILED, "mất luồng tiếp âm", 12.0)})
    # Tuesday/Thursday afternoons in TDP 1 and 2.
    afternoon = "Hỗ trợ người dân tại Bộ phận Một cửa"
    for day in (3, 5, 12):
        build.broadcast(slot_id="chieu-t3-t5", title=afternoon, text=TEXT_MOT_CUA, when=_at(day, 17, 0),
                        status=BroadcastStatus.COMPLETED, nodes=tdp12, duration=40.0)
    build.broadcast(slot_id="chieu-t3-t5", title=afternoon, text=TEXT_MOT_CUA, when=_at(10, 17, 0),
                    status=BroadcastStatus.FAILED, nodes=tdp12, duration=40.0, reason="không cụm loa nào phát xong",
                    outcome={n: (DeliveryState.FAILED, "không nhận được báo cáo từ cụm loa", None) for n in tdp12})
    # Saturday evening: the bulletin was never approved.
    build.broadcast(slot_id="toi-thu-bay", title="Cải cách hành chính cuối tuần", text=TEXT_HAI_LONG,
                    when=_at(7, 19, 0), status=BroadcastStatus.NOT_AIRED, nodes=[],
                    reason="nội dung chưa được phê duyệt: muc-tieu-hai-long-99")
    session.flush()
