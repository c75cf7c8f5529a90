"""Air now (phát ngay): a recorded announcement or an approved bulletin, at normal priority, on chosen zones.

For what cannot wait for the next slot but is not an emergency: a water cut, a meeting in an hour.
Airing skips the programme's scheduling, so only an approver or an admin may do it (roles APPROVE);
an officer schedules a one-off slot instead. A bulletin must be approved; a recording (audio asset) is
vouched for by the approver who airs it, and the audit trail records who aired what, where.
Unlike an emergency it preempts nothing: if a priority item is on air on the same loudspeakers, it
starts when that ends (radio/broadcast.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from radio.broadcast import Item, Plan
from radio.errors import Conflict, InvalidInput, NotFound
from radio.logbook import audit
from radio.models import AudioAsset, Bulletin, BulletinStatus, ItemKind, Priority, Zone, utcnow
from radio.web.deps import ServiceDep, SessionDep
from radio.web.programme_api import AiredOut, SlugId, _broadcaster
from radio.web.security import READ, Approver

router = APIRouter(prefix="/api/v1", tags=["broadcasts"], dependencies=[Depends(READ)])
BROADCAST_AIRED = "broadcast.aired_now"


class AirIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset_id: SlugId | None = Field(default=None, description="an uploaded recording (POST /api/v1/assets)")
    bulletin_id: SlugId | None = Field(default=None, description="an approved bulletin")
    zones: list[SlugId] = Field(default_factory=list, max_length=500, description="empty: the whole ward")
    title: Annotated[str, Field(min_length=1, max_length=300)] | None = Field(
        default=None, description="default: the recording's name or the bulletin's title")

    @model_validator(mode="after")
    def _one_source(self) -> AirIn:
        if (self.asset_id is None) == (self.bulletin_id is None):
            raise ValueError("give exactly one of asset_id and bulletin_id")
        return self


@router.post("/broadcasts", response_model=AiredOut, status_code=201)
def air_now(body: AirIn, service: ServiceDep, session: SessionDep, user: Approver) -> AiredOut:
    """Air a recording or an approved bulletin now (normal priority); follow it at GET /broadcasts/{id}."""
    known = set(session.scalars(select(Zone.id).where(Zone.id.in_(body.zones))))
    unknown = sorted(set(body.zones) - known)
    if unknown:
        raise InvalidInput(f"không có tổ dân phố {', '.join(unknown)}", where="zones")
    if body.asset_id is not None:
        asset = session.get(AudioAsset, body.asset_id)
        if asset is None:
            raise NotFound("audio", body.asset_id)
        item, title, entity = Item(kind=ItemKind.AUDIO, asset=asset), body.title or asset.name, ("asset", asset.id)
    else:
        bulletin = session.get(Bulletin, body.bulletin_id)
        if bulletin is None:
            raise NotFound("bulletin", body.bulletin_id)
        if bulletin.status != BulletinStatus.APPROVED:
            raise Conflict(f"bản tin «{bulletin.title}» chưa được phê duyệt, không thể phát")
        item, title, entity = Item(kind=ItemKind.BULLETIN, bulletin=bulletin), body.title or bulletin.title, (
            "bulletin", bulletin.id)
    broadcaster = _broadcaster(service)
    now = utcnow()
    where = ", ".join(body.zones) or "toàn phường"
    audit.record(session, actor=user.username, action=BROADCAST_AIRED, entity_type=entity[0], entity_id=entity[1],
                 before=None, after={"title": title, "zones": list(body.zones) or ["all"]})
    session.commit()
    session.expunge_all()  # the broadcaster reads the rows' values after this session is gone
    broadcast_id = broadcaster.air(Plan(
        occurrence_key=f"manual:{now:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:6]}", kind="manual", title=title[:300],
        priority=Priority.NORMAL, scheduled_at=now, items=[item], zone_ids=tuple(body.zones),
    ))
    return AiredOut(broadcast_id=broadcast_id, detail=where)
