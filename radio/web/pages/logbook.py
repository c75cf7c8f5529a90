"""Nhật ký: the as-run log filtered by date, TDP, segment and outcome, with CSV export of the same view.

The rows come from :func:`radio.logbook.asrun.query`, as for ``GET /api/v1/asrun`` and ``radio log``;
the period reports (PDF, Excel) are the audit API's ``/api/v1/reports``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from radio.errors import InvalidInput
from radio.logbook import asrun
from radio.models import Segment
from radio.settings import Settings
from radio.web import queries
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import KIND_VI, OUTCOME_VI, PRIORITY_VI, LogReader, local_today, page_router, render, say

router = page_router()
PAGE_SIZE = 25
CSV_LIMIT = asrun.MAX_LIMIT


@dataclass
class Filters:
    first: str = ""
    last: str = ""
    zone: str = ""
    segment: str = ""
    outcome: str = ""
    page: int = 1

    def query(self, **change: Any) -> str:
        """This view's URL query, with some values changed (e.g. another page)."""
        values = {"tu": self.first, "den": self.last, "tdp": self.zone, "chuyen_muc": self.segment,
                  "ket_qua": self.outcome, "trang": self.page, **change}
        return urlencode({k: v for k, v in values.items() if v not in ("", None) and not (k == "trang" and v == 1)})


def _filters(request: Request) -> Filters:
    q = request.query_params
    try:
        page = max(1, min(int(q.get("trang", "1") or 1), 100000))
    except ValueError:
        page = 1
    return Filters(first=q.get("tu", "")[:10], last=q.get("den", "")[:10], zone=q.get("tdp", "")[:64],
                   segment=q.get("chuyen_muc", "")[:64], outcome=q.get("ket_qua", "")[:16], page=page)


def _period(f: Filters, settings: Settings) -> asrun.Period | None:
    """Both dates, one (the other defaults to it… or today), or none (the whole log)."""
    if not f.first and not f.last:
        return None
    first = f.first or f.last
    last = f.last or local_today(settings.tz).isoformat()
    if f.first and not f.last and asrun.parse_date(first) > local_today(settings.tz):
        last = first
    return asrun.Period.parse(first, last, settings.tz)


def _page(session: Session, settings: Settings, f: Filters, limit: int, offset: int) -> asrun.Page:
    return asrun.query(session, period=_period(f, settings), zone=f.zone or None, segment=f.segment or None,
                       outcome=f.outcome or None, limit=limit, offset=offset)


@router.get("/nhat-ky")
def log_page(request: Request, session: SessionDep, settings: SettingsDep, _user: LogReader) -> Response:
    f = _filters(request)
    error = None
    try:
        page = _page(session, settings, f, PAGE_SIZE, (f.page - 1) * PAGE_SIZE)
    except InvalidInput as exc:
        error, page = say(exc), asrun.Page(total=0, limit=PAGE_SIZE, offset=0, items=[])
    today = local_today(settings.tz)
    report_from = f.first or f.last or (today - dt.timedelta(days=30)).isoformat()
    report_to = f.last or today.isoformat()
    pages = max(1, (page.total + PAGE_SIZE - 1) // PAGE_SIZE)
    return render(request, "log.html", {
        "active": "log", "f": f, "page": page, "pages": pages, "error": error,
        "zones": queries.zones(session), "segments": list(session.scalars(select(Segment).order_by(Segment.name))),
        "outcomes": [(o, OUTCOME_VI.get(o, o)) for o in asrun.OUTCOMES],
        "report_query": f"from={report_from}&to={report_to}",
        "csv_query": f.query(trang=""),
    })


@router.get("/nhat-ky.csv")
def log_csv(request: Request, session: SessionDep, settings: SettingsDep, _user: LogReader) -> Response:
    """The filtered log (up to 1000 rows, newest first), one row per broadcast, for Excel (UTF-8 with BOM)."""
    f = _filters(request)
    page = _page(session, settings, f, CSV_LIMIT, 0)
    tz = settings.tz
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["Mã", "Giờ phát", "Nội dung", "Chuyên mục", "Loại", "Mức ưu tiên", "Kết quả",
                     "Cụm loa phát đủ", "Cụm loa được gửi", "Thời lượng (giây)", "Lý do"])
    for b in page.items:
        writer.writerow([
            b.id, b.scheduled_at.astimezone(tz).strftime("%d/%m/%Y %H:%M:%S"), b.title, b.segment_name or "",
            KIND_VI.get(b.kind, b.kind), PRIORITY_VI.get(b.priority, b.priority),
            OUTCOME_VI["preempted"] if b.preempted and b.status != "completed" else b.status_vi,
            b.played_fully, b.targeted, f"{b.duration_s:.1f}" if b.duration_s else "", b.reason or ""])
    name = f"nhat-ky-phat-{local_today(tz):%Y%m%d}.csv"
    return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
