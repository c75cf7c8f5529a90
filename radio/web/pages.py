"""Server-rendered Vietnamese pages (Jinja2); they work without JavaScript."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from radio.logbook.labels import BROADCAST_VI
from radio.models import Delivery, DeliveryState
from radio.web import queries
from radio.web.deps import SessionDep, SettingsDep

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")



@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    zones = queries.zones(session)
    recent = queries.broadcasts(session, limit=20)
    finished = dict(session.execute(
        select(Delivery.broadcast_id, func.count()).where(Delivery.state == DeliveryState.FINISHED)
        .where(Delivery.broadcast_id.in_([b.id for b in recent])).group_by(Delivery.broadcast_id)
    ).all())
    return templates.TemplateResponse(request, "home.html", {
        "zones": zones, "broadcasts": recent, "finished": finished, "tz": settings.tz, "status_vi": BROADCAST_VI,
    })
