"""Read-only API for the audit: as-run log, reconciliation, audit trail and its check, reports, exchange export.

Only GET routes: nothing can change or delete audit or as-run rows through the API (a test walks the
app's routes to keep it so). Dates are whole local days, ``from`` and ``to`` both included, written
``2024-09-15`` or ``15/09/2024``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from radio.errors import InvalidInput
from radio.logbook import asrun, audit, exchange, reports
from radio.web.deps import SessionDep, SettingsDep
from radio.web.schemas import MAX_OFFSET
from radio.web.security import AUDIT, LOGS

router = APIRouter(prefix="/api/v1", tags=["audit"], dependencies=[Depends(LOGS)])

FromQ = Annotated[str | None, Query(alias="from", max_length=10, description="ngày đầu (2024-01-01 hoặc 01/01/2024)")]
ToQ = Annotated[str | None, Query(alias="to", max_length=10, description="ngày cuối, tính cả ngày này")]
FromReq = Annotated[str, Query(alias="from", max_length=10, description="ngày đầu (2024-01-01 hoặc 01/01/2024)")]
ToReq = Annotated[str, Query(alias="to", max_length=10, description="ngày cuối, tính cả ngày này")]
Id = Annotated[str | None, Query(max_length=64)]
DELIVERIES_HELP = "false: chỉ tóm tắt từng buổi phát (số cụm loa, tỷ lệ phủ sóng), không kèm danh sách từng cụm loa"


def _period(first: str | None, last: str | None, tz: Any) -> asrun.Period | None:
    if first is None and last is None:
        return None
    if first is None or last is None:
        raise InvalidInput("cần cả hai tham số from và to (hoặc không có tham số nào)", where="from/to")
    return asrun.Period.parse(first, last, tz)


@router.get("/asrun", response_class=Response, responses={200: {"content": {"application/json": {}}}})
def as_run(session: SessionDep, settings: SettingsDep, first: FromQ = None, last: ToQ = None, zone: Id = None,
           segment: Id = None, priority: Annotated[str | None, Query(max_length=16)] = None,
           outcome: Annotated[str | None, Query(max_length=16, description="broadcast status or 'preempted'")] = None,
           limit: Annotated[int, Query(ge=1, le=asrun.MAX_LIMIT)] = 50,
           offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
           order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
           deliveries: Annotated[bool, Query(description=DELIVERIES_HELP)] = True) -> Response:
    """The as-run log per broadcast and per cluster, filtered and paged (``total`` counts every match).

    Each item lists its deliveries (one per cluster and playlist part: a whole-ward broadcast has thousands);
    ``deliveries=false`` leaves that list out and keeps the per-broadcast counts and coverage.
    """
    page = asrun.query(session, period=_period(first, last, settings.tz), zone=zone, segment=segment,
                       priority=priority, outcome=outcome, limit=limit, offset=offset, newest_first=order == "desc",
                       with_deliveries=deliveries)
    return json_response(page, omit=frozenset() if deliveries else frozenset({"deliveries"}))


def json_response(content: Any, omit: frozenset[str] = frozenset()) -> Response:
    """Dataclass rows as JSON in one pass of the C encoder, without the fields in ``omit``.

    ``jsonable_encoder(dataclasses.asdict(...))`` took seconds for a page of 12,000 deliveries; the
    output is the same (datetimes in ISO 8601 with their offset).
    """
    def default(value: Any) -> Any:
        if isinstance(value, dt.date):
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: v for k, v in vars(value).items() if k not in omit}
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    body = json.dumps(content, default=default, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode(), media_type="application/json")


OUTCOME_HELP = ("kết quả: " + ", ".join(f"{c.value} ({asrun.CATEGORY_VI[c]})" for c in asrun.Category)
                + "; nhiều giá trị cách nhau bằng dấu phẩy")


@router.get("/reconciliation")
def reconciliation(session: SessionDep, settings: SettingsDep, first: FromReq, last: ToReq, zone: Id = None,
                   segment: Id = None,
                   priority: Annotated[str | None, Query(max_length=64, description="normal, priority, emergency")] = None,
                   outcome: Annotated[str | None, Query(max_length=200, description=OUTCOME_HELP)] = None,
                   limit: Annotated[int | None, Query(ge=1, le=asrun.MAX_RECON_LIMIT,
                                                      description="không có: mọi dòng")] = None,
                   offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Any:
    """Every planned occurrence in the period with what happened, plus broadcasts outside the schedule.

    Filtered by zone, segment, priority and outcome (category); ``total`` and ``counts`` cover every
    matching row, ``rows`` the page from ``offset`` (at most ``limit``).
    """
    period = asrun.Period.parse(first, last, settings.tz)
    result = asrun.reconcile(session, period, grace_s=settings.misfire_grace_s, zone=zone, segment=segment,
                             priority=priority, outcome=outcome)
    return jsonable_encoder(result.as_dict(limit=limit, offset=offset))


@router.get("/audit", dependencies=[Depends(AUDIT)])
def audit_log(session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
              offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0, action: Id = None, entity_type: Id = None,
              entity_id: Annotated[str | None, Query(max_length=200)] = None,
              actor: Annotated[str | None, Query(max_length=100)] = None) -> Any:
    """The audit trail, newest first: who, when, what, before and after, with each record's hashes."""
    total, rows = audit.entries(session, limit=limit, offset=offset, action=action, entity_type=entity_type,
                                entity_id=entity_id, actor=actor)
    items = [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "entity_type": e.entity_type,
              "entity_id": e.entity_id, "before": e.before, "after": e.after, "prev_hash": e.prev_hash,
              "hash": e.hash} for e in rows]
    return jsonable_encoder({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get("/audit/verify", dependencies=[Depends(AUDIT)])
def audit_verify(session: SessionDep,
                 anchor: Annotated[list[str] | None, Query(max_length=20, description="SỐ:SHA256")] = None) -> Any:
    """Check the hash chain; ``ok`` false names the first broken record and why."""
    anchors = [audit.parse_anchor(a) for a in anchor or []]
    return audit.verify(session, anchors).as_dict()


@router.get("/audit/head", dependencies=[Depends(AUDIT)])
def audit_head(session: SessionDep) -> Any:
    """The chain head (last record id and hash), to note outside the database."""
    head = audit.head(session)
    return {"id": head.last_id, "hash": head.hash, "anchor": str(head)}


@router.get("/reports", response_class=Response,
            responses={200: {"content": {t: {} for t in reports.MEDIA_TYPES.values()}}})
def report(session: SessionDep, settings: SettingsDep, first: FromReq, last: ToReq,
           format: Annotated[str, Query(pattern="^(pdf|xlsx|csv)$")] = "pdf") -> Response:
    """The Vietnamese report for the period as a file (PDF, XLSX or CSV) to attach as evidence."""
    fmt = cast(reports.Format, format)
    built = reports.build_report(session, settings, first, last)
    return Response(reports.render(built, fmt), media_type=reports.MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": reports.content_disposition(built, fmt)})


@router.get("/exchange")
def exchange_export(session: SessionDep, settings: SettingsDep, first: FromQ = None, last: ToQ = None) -> Any:
    """The JSON exchange document (docs/exchange.md); without dates, the whole as-run history."""
    doc = exchange.build(session, settings, _period(first, last, settings.tz))
    return JSONResponse(doc, headers={"Content-Disposition": 'inline; filename="radio-exchange.json"'})
