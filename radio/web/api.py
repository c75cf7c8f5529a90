"""JSON API v1: zones, nodes, slots, upcoming occurrences, broadcasts with per-node deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from radio.errors import NotFound
from radio.models import Broadcast, Node, utcnow
from radio.web import queries
from radio.web.deps import SessionDep, SettingsDep
from radio.web.schemas import (
    MAX_ID,
    MAX_OFFSET,
    MAX_PAGE,
    BroadcastDetail,
    BroadcastOut,
    NodeOut,
    OccurrenceOut,
    SlotOut,
    ZoneOut,
)
from radio.web.security import READ

router = APIRouter(prefix="/api/v1", tags=["v1"], dependencies=[Depends(READ)])


@router.get("/zones", response_model=list[ZoneOut])
def list_zones(session: SessionDep) -> list[ZoneOut]:
    return [ZoneOut.model_validate(z) for z in queries.zones(session)]


PageLimit = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="số dòng tối đa (mặc định: tất cả)")]


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(session: SessionDep, limit: PageLimit = None,
               offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[NodeOut]:
    """The clusters ordered by id; ``limit``/``offset`` page through a big ward (without them: every cluster)."""
    query = select(Node.id, Node.zone_id, Node.name, Node.online, Node.last_seen_at).order_by(Node.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [NodeOut.model_validate(row._mapping) for row in session.execute(query)]


@router.get("/slots", response_model=list[SlotOut])
def list_slots(session: SessionDep) -> list[SlotOut]:
    return [queries.slot_out(s) for s in queries.slots(session)]


@router.get("/occurrences", response_model=list[OccurrenceOut])
def upcoming(session: SessionDep, settings: SettingsDep,
             days: Annotated[int, Query(ge=1, le=62)] = 7,
             zone: Annotated[str | None, Query(max_length=64)] = None) -> list[OccurrenceOut]:
    return queries.upcoming(session, settings.tz, utcnow(), days, zone)


@router.get("/broadcasts", response_model=list[BroadcastOut])
def list_broadcasts(session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[BroadcastOut]:
    return [BroadcastOut.model_validate(b) for b in queries.broadcasts(session, limit, offset)]


@router.get("/broadcasts/{broadcast_id}", response_model=BroadcastDetail)
def get_broadcast(broadcast_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep) -> BroadcastDetail:
    row = session.scalars(
        select(Broadcast).options(selectinload(Broadcast.deliveries)).where(Broadcast.id == broadcast_id)
    ).one_or_none()
    if row is None:
        raise NotFound("broadcast", broadcast_id)
    return BroadcastDetail.model_validate(row)
