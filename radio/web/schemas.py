"""JSON shapes of the API (v1). Times are UTC ISO 8601; clients show them in the site's zone."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

MAX_OFFSET = 10_000_000  # paging bounds: beyond 64-bit integers the databases overflow
MAX_ID = 2**62
MAX_PAGE = 10_000  # rows per page of a list that pages (nodes)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class NodeOut(Out):
    id: str
    zone_id: str
    name: str
    online: bool
    last_seen_at: dt.datetime | None


class ZoneOut(Out):
    id: str
    name: str
    nodes: list[NodeOut]


class SlotOut(Out):
    id: str
    name: str
    segment_id: str | None
    start_time: str = Field(description="wall-clock time in the site's zone, HH:MM or HH:MM:SS")
    weekdays: str
    interval_weeks: int
    dates: list[dt.date]
    exclude_dates: list[dt.date]
    valid_from: dt.date | None
    valid_until: dt.date | None
    holidays: str
    priority: str
    enabled: bool
    duration_s: float | None
    zone_ids: list[str]
    group_ids: list[str]
    bulletin_ids: list[str]
    playlist: list[str]


class OccurrenceOut(BaseModel):
    slot_id: str
    slot_name: str
    at: dt.datetime
    local_time: str
    zone_ids: list[str]
    group_ids: list[str] = []  # named groups of nodes it targets; no zones and no groups = the whole ward
    bulletins: list[str]


class DeliveryOut(Out):
    node_id: str
    command_id: str
    state: str
    reason: str | None
    issued_at: dt.datetime
    received_at: dt.datetime | None
    ready_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    played_s: float | None


class BroadcastOut(Out):
    id: int
    occurrence_key: str
    slot_id: str | None
    kind: str
    priority: str
    title: str
    scheduled_at: dt.datetime
    start_at: dt.datetime | None
    completed_at: dt.datetime | None
    status: str
    reason: str | None
    audio_sha256: str | None
    duration_s: float | None


class BroadcastDetail(BroadcastOut):
    text: str | None
    deliveries: list[DeliveryOut]


class Health(BaseModel):
    status: str
    database: bool
    mqtt: bool
