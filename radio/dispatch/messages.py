"""Wire schema of protocol v1: frozen, validated JSON payloads (see docs/protocol.md).

Payloads are validated strictly on receipt: unknown protocol versions, wrong types or oversize
messages are rejected with a message, never crash the receiver.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

MAX_PAYLOAD_BYTES = 64 * 1024
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _utc(value: dt.datetime) -> dt.datetime:
    """Instants are kept in UTC; one that cannot be (year 9999 at -12:00) is refused, not a crash later."""
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("instant out of range") from None


Instant = Annotated[AwareDatetime, AfterValidator(_utc)]


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def dumps(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class AudioRef(Wire):
    url: str = Field(max_length=2000)
    sha256: Sha256
    duration_s: float = Field(gt=0)
    format: Literal["mp3"] = "mp3"


class StreamRef(Wire):
    """A live stream to relay (tiếp âm Đài thành phố) for a set duration."""

    url: str = Field(max_length=2000, pattern=r"^https?://")
    duration_s: float = Field(gt=0, le=6 * 3600)


class CommandType(enum.StrEnum):
    PLAY = "play"  # play ``audio`` at ``start_at``
    RELAY = "relay"  # relay ``stream`` from ``start_at`` for its duration
    STOP = "stop"  # stop whatever plays
    VOLUME = "volume"  # set ``volume`` (0–100)
    SYNC = "sync"  # estimate the clock offset now
    ANNOUNCE = "announce"  # re-publish state


class Command(Wire):
    """Server → node. Never retained; ``id`` is unique and nodes deduplicate on it."""

    v: Literal[1] = 1
    id: Id
    type: CommandType
    broadcast_id: int | None = None
    priority: Literal["normal", "priority", "emergency"] = "normal"
    title: str = Field(default="", max_length=300)
    issued_at: Instant
    start_at: Instant | None = None
    valid_until: Instant
    audio: AudioRef | None = None
    stream: StreamRef | None = None
    volume: int | None = Field(default=None, ge=0, le=100)


class EventType(enum.StrEnum):
    RECEIVED = "received"
    READY = "ready"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Event(Wire):
    """Node → server, on ``evt/<node>``: one step of one command's execution on that node."""

    v: Literal[1] = 1
    node: Id
    command_id: Id
    broadcast_id: int | None = None
    event: EventType
    at: Instant
    reason: str | None = Field(default=None, max_length=500)
    played_s: float | None = Field(default=None, ge=0, le=86400)


class NodeState(Wire):
    """Node → server, retained on ``state/<node>``; the Last Will carries ``online: false``."""

    v: Literal[1] = 1
    node: Id
    online: bool
    session: int = Field(ge=0, le=2**63 - 1)
    at: Instant | None = None


class LinkQuality(Wire):
    """How good the node's uplink is: the MQTT round trip of its best recent clock sample, and radio signal if known."""

    rtt_ms: float | None = Field(default=None, ge=0, le=600_000)
    rssi_dbm: int | None = Field(default=None, ge=-150, le=0)


class Playing(Wire):
    """What a node is playing right now (in heartbeats)."""

    command_id: Id
    broadcast_id: int | None = None
    priority: Literal["normal", "priority", "emergency"] = "normal"
    title: str = Field(default="", max_length=300)
    since: Instant


class Heartbeat(Wire):
    """Node → server on ``hb/<node>`` every ``heartbeat_s`` (and on connect), QoS 0, never retained."""

    v: Literal[1] = 1
    node: Id
    session: int = Field(ge=0, le=2**63 - 1)
    at: Instant
    volume: int = Field(ge=0, le=100)
    playing: Playing | None = None
    link: LinkQuality = LinkQuality()
    clock_offset_ms: float | None = Field(default=None, ge=-86_400_000, le=86_400_000)
    clock_synced: bool = False
    player: str = Field(default="", max_length=64)
    uptime_s: float = Field(default=0, ge=0)
    cache_bytes: int = Field(default=0, ge=0)


class ClockRequest(Wire):
    """Node → server on ``clock/<node>``, QoS 0: ``t0`` is the node's own clock when it sent this (Unix seconds)."""

    v: Literal[1] = 1
    node: Id
    id: Id
    t0: float


class ClockReply(Wire):
    """Server → node on ``clock/<node>/reply``, QoS 0: ``t0`` echoed; ``t1`` received and ``t2`` sent, server clock."""

    v: Literal[1] = 1
    id: Id
    t0: float
    t1: float
    t2: float


W = TypeVar("W", bound=Wire)


class BadMessage(ValueError):
    pass


def parse(model: type[W], raw: bytes) -> W:
    """Decode and validate one payload; raise BadMessage with a short reason otherwise."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise BadMessage(f"payload too large ({len(raw)} bytes)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("payload is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise BadMessage(f"{where}: {first['msg']}") from None


