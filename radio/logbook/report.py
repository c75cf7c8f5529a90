"""The as-run log as a readable table (Vietnamese headers), newest first."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from radio.logbook.labels import BROADCAST_VI, DELIVERY_VI
from radio.web.queries import broadcasts


def as_run_table(session: Session, tz: dt.tzinfo, limit: int = 30) -> str:
    rows = [("Giờ phát", "Nội dung", "Trạng thái", "Cụm loa", "Kết quả", "Bắt đầu", "Đã phát (giây)")]
    for b in broadcasts(session, limit=limit):
        head = (b.scheduled_at.astimezone(tz).strftime("%d/%m/%Y %H:%M:%S"), b.title[:40],
                BROADCAST_VI.get(b.status, b.status) + (f" ({b.reason})" if b.reason else ""))
        if not b.deliveries:
            rows.append((*head, "", "", "", ""))
        for i, d in enumerate(b.deliveries):
            rows.append((*(head if i == 0 else ("", "", "")), d.node_id, DELIVERY_VI.get(d.state, d.state),
                         d.started_at.astimezone(tz).strftime("%H:%M:%S.%f")[:-3] if d.started_at else "",
                         f"{d.played_s:.1f}" if d.played_s is not None else ""))
    if len(rows) == 1:
        return "Chưa có lượt phát nào."
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
