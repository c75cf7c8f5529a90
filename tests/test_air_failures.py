"""A fire whose commands cannot be stored (SQLite's write lock held by another writer) ends failed with an alert,
instead of staying "preparing" for ever; a publish that fails after storing is left to the outbox."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import Broadcaster, Part, Plan
from radio.db import make_engine, migrate, session_factory, transaction
from radio.errors import ServiceUnavailable
from radio.models import (
    Alert,
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Delivery,
    Node,
    Priority,
    Zone,
    utcnow,
)
from radio.settings import Settings


class RecordingMqtt:
    """Records publishes (what was sent is all these tests look at); ``fail`` makes publishing raise."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []
        self.fail = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if self.fail:
            raise ServiceUnavailable(f"publish to {topic} failed: the client is not connected")
        self.sent.append((topic, json.loads(payload)))


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """The service's schema, then an engine that waits 0.2 s (not 30) for SQLite's write lock."""
    setup = make_engine(settings.db_url)
    migrate(setup)
    factory = session_factory(setup)
    with transaction(factory) as session:
        session.add(Zone(id="z1", name="Z1"))
        session.add_all(Node(id=f"n{i}", zone_id="z1", name=f"n{i}") for i in range(3))
        session.add(Bulletin(id="thu", title="Thử loa", text="Thử loa.", status=BulletinStatus.APPROVED))
    setup.dispose()
    quick = create_engine(settings.db_url, connect_args={"timeout": 0.2, "check_same_thread": False})
    yield quick
    quick.dispose()


class LockedWhileIssuing(Broadcaster):
    """Another writer (the recorder, say) holds SQLite's write lock for as long as the commands are being stored."""

    def _issue(self, broadcast_id: int, plan: Plan, text: str, parts: list[Part]) -> list[Command]:
        path = make_url(self.settings.db_url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            return super()._issue(broadcast_id, plan, text, parts)
        finally:
            other.execute("ROLLBACK")
            other.close()


def _plan(factory: sessionmaker[Session]) -> Plan:
    with factory() as session:
        bulletin = session.get_one(Bulletin, "thu")
    return Plan.of_bulletins([bulletin], occurrence_key=f"test:{utcnow().isoformat()}", kind="manual", title="Thử loa",
                             priority=Priority.NORMAL, scheduled_at=utcnow())


def test_commands_that_cannot_be_stored_close_the_broadcast_as_failed_with_an_alert(
        settings: Settings, engine: Engine) -> None:
    """'database is locked' while storing: the broadcast is failed with the reason and an alert, nothing is sent."""
    factory = session_factory(engine)
    mqtt = RecordingMqtt()
    broadcast_id = LockedWhileIssuing(settings, factory, mqtt).air(_plan(factory))  # type: ignore[arg-type]
    assert broadcast_id is not None
    with factory() as session:
        row = session.get_one(Broadcast, broadcast_id)
        assert row.status == BroadcastStatus.FAILED and row.completed_at is not None
        assert "không lưu được lệnh phát" in (row.reason or "") and "database is locked" in (row.reason or "")
        alert = session.scalars(select(Alert).where(Alert.broadcast_id == broadcast_id)).one()
        assert alert.kind == "failed" and "database is locked" in alert.message
        assert not session.scalar(select(func.count()).select_from(Delivery))  # the transaction left nothing behind
        assert not session.scalar(select(func.count()).select_from(Command))
    assert mqtt.sent == []


def test_a_publish_that_fails_after_storing_leaves_the_command_to_the_outbox(settings: Settings,
                                                                            engine: Engine) -> None:
    """The commands are stored before publishing, so a broker error does not fail the broadcast: it stays on air
    with its command unpublished, which the outbox publishes on a later tick."""
    factory = session_factory(engine)
    mqtt = RecordingMqtt()
    mqtt.fail = True
    broadcast_id = Broadcaster(settings, factory, mqtt).air(_plan(factory))  # type: ignore[arg-type]
    assert broadcast_id is not None
    with factory() as session:
        assert session.get_one(Broadcast, broadcast_id).status == BroadcastStatus.ON_AIR
        command = session.scalars(select(Command).where(Command.broadcast_id == broadcast_id)).one()
        assert command.published_at is None
        assert session.scalar(select(func.count()).select_from(Delivery)) == 3
