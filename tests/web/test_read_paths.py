"""The busiest reads, made cheap (issue 9): today's programme, the node list, and the token note on every request.

Today's programme reads slots as plain rows and memoises each rule's expansion under the rule's stored
values; these tests show every kind of change is visible on the next request, also when another process
(another engine) makes it, and that the answer is the rules' own expansion.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from radio import auth
from radio.db import make_engine, migrate
from radio.models import ApiToken, Slot, utcnow
from radio.schedule.loader import load_programme
from radio.schedule.recurrence import SlotRule, occurrences
from radio.service import Service
from radio.settings import Settings
from radio.web import queries
from radio.web.app import create_app
from tests.conftest import DEMO, role_headers

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
NIGHT = {"id": "dem-thu", "name": "Bản tin đêm thử", "time": "02:13", "days": EVERY_DAY, "zones": ["tdp-3"],
         "play": ["muc-tieu-hai-long-99"]}


def make_client(settings: Settings) -> tuple[Service, dict[str, dict[str, str]]]:
    service = Service(settings)
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    return service, role_headers(service)


@pytest.fixture
def client(make_settings: Callable[..., Settings], db_url: str) -> Iterator[TestClient]:
    """The app over the demo programme (no broker) on SQLite and PostgreSQL, as an officer; no session cap."""
    service, headers = make_client(make_settings(sessions_per_day=48, database_url=db_url))
    with TestClient(create_app(service, manage=False)) as test_client:
        test_client.headers.update(headers["officer"])
        yield test_client
    service.engine.dispose()


def today(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/occurrences", params={"days": 1, **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def mine(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    return [o for o in today(client, **params) if o["slot_id"] == NIGHT["id"]]


# today's programme ----------------------------------------------------------------------------------------
def test_every_slot_change_shows_in_todays_programme_at_once(client: TestClient) -> None:
    """Create, move, rename, retarget, replay, disable, re-enable and delete a slot: each shows on the next read."""
    assert mine(client) == []  # and the memo is warm from here on
    assert client.post("/api/v1/slots", json=NIGHT).status_code == 201
    (occ,) = mine(client)
    assert occ["local_time"].endswith("02:13") and occ["zone_ids"] == ["tdp-3"]
    assert occ["bulletins"] == ["muc-tieu-hai-long-99"] and occ["slot_name"] == NIGHT["name"]
    changes: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
        ({"time": "03:41"}, lambda o: o["local_time"].endswith("03:41")),
        ({"name": "Bản tin đêm đã đổi"}, lambda o: o["slot_name"] == "Bản tin đêm đã đổi"),
        ({"zones": ["tdp-1", "tdp-4"]}, lambda o: o["zone_ids"] == ["tdp-1", "tdp-4"]),
        ({"play": ["muc-tieu-hai-long-99", {"relay": "http://127.0.0.1:9/live", "minutes": 5}]},
         lambda o: o["bulletins"] == ["muc-tieu-hai-long-99", "relay:http://127.0.0.1:9/live (5 phút)"]),
    ]
    body = dict(NIGHT)
    for change, shows in changes:
        body.update(change)
        assert client.put(f"/api/v1/slots/{NIGHT['id']}", json=body).status_code == 200, change
        (occ,) = mine(client)
        assert shows(occ), (change, occ)
    local_day = dt.datetime.fromisoformat(occ["at"]).astimezone(client.app.state.service.settings.tz).date()  # type: ignore[attr-defined]
    body["except"] = [local_day.isoformat()]
    assert client.put(f"/api/v1/slots/{NIGHT['id']}", json=body).status_code == 200
    assert mine(client) == []  # today's occurrence excluded
    body["except"] = []
    assert client.put(f"/api/v1/slots/{NIGHT['id']}", json={**body, "enabled": False}).status_code == 200
    assert mine(client) == []
    assert client.put(f"/api/v1/slots/{NIGHT['id']}", json=body).status_code == 200
    assert len(mine(client)) == 1 and len(mine(client, days=7)) == 7
    assert client.delete(f"/api/v1/slots/{NIGHT['id']}").status_code == 204
    assert mine(client) == []


def test_a_change_by_another_process_shows_at_once(client: TestClient) -> None:
    """A slot changed through another engine (the CLI, a second process) is seen on the next read."""
    assert client.post("/api/v1/slots", json=NIGHT).status_code == 201
    assert len(mine(client)) == 1
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    other = make_engine(service.settings.db_url)
    try:
        with other.begin() as conn:
            conn.execute(update(Slot).where(Slot.id == NIGHT["id"]).values(start_time=dt.time(4, 56)))
        (occ,) = mine(client)
        assert occ["local_time"].endswith("04:56")
        with other.begin() as conn:
            conn.execute(update(Slot).where(Slot.id == NIGHT["id"]).values(weekdays="", dates=["2020-01-01"]))
        assert mine(client) == []  # now a one-off in the past
    finally:
        other.dispose()


def test_upcoming_is_the_rules_expansion(client: TestClient) -> None:
    """Read twice (cold, then from the memo), the programme equals each enabled slot's own expansion.

    On 1 and 7 days (memoised windows) and 31 (computed each time), for the whole ward and per zone.
    """
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    tz = service.settings.tz
    start = utcnow()
    with service.factory() as session:
        for days in (1, 7, 31):
            for zone in (None, "tdp-1", "tdp-3", "tdp-6"):
                expected = _expected(session, tz, start, start + dt.timedelta(days=days), zone)
                assert expected or days == 1, "the demo programme airs every week"
                for _ in range(2):
                    got = queries.upcoming(session, tz, start, days, zone)
                    assert [(o.at, o.slot_id, o.slot_name, o.zone_ids, o.bulletins) for o in got] == expected, (days, zone)


def _expected(session: Any, tz: dt.tzinfo, start: dt.datetime, end: dt.datetime, zone: str | None) -> list[Any]:
    """From the ORM slots and the rules module directly, as the programme was built before issue 9."""
    expected = []
    for slot in queries.slots(session):
        reach = set(slot.zone_ids) | {z for g in slot.group_ids for z in _group_zones(session, g)}
        if slot.enabled and (zone is None or slot.whole_ward or zone in reach):
            expected += [(at, slot.id, slot.name, slot.zone_ids, [queries.describe_item(i) for i in slot.items])
                         for at in occurrences(SlotRule.from_slot(slot), start, end, tz)]
    return sorted(expected, key=lambda e: (e[0], e[1]))


def _group_zones(session: Any, group_id: str) -> set[str]:
    from radio.models import Node, NodeGroupMember

    rows = session.execute(select(Node.zone_id).join(NodeGroupMember, NodeGroupMember.node_id == Node.id)
                           .where(NodeGroupMember.group_id == group_id))
    return {z for (z,) in rows}


def test_the_expansion_memo_is_bounded(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_CACHED entries the memo starts afresh; answers stay the same."""
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    monkeypatch.setattr(queries, "MAX_CACHED", 5)
    monkeypatch.setattr(queries, "_expansions", {})
    start = utcnow()
    with service.factory() as session:
        first = queries.upcoming(session, service.settings.tz, start, 7)
        assert len(queries._expansions) <= 5
        assert queries.upcoming(session, service.settings.tz, start, 7) == first


# the node list ----------------------------------------------------------------------------------------------
def test_node_list_pages_on_request_only(client: TestClient) -> None:
    """Without limit/offset every node, as before; with them, pages in id order that add up to the whole."""
    everything = client.get("/api/v1/nodes").json()
    assert len(everything) >= 6 and [n["id"] for n in everything] == sorted(n["id"] for n in everything)
    pages = [client.get("/api/v1/nodes", params={"limit": 4, "offset": o}).json() for o in range(0, len(everything), 4)]
    assert all(len(p) <= 4 for p in pages) and [n for p in pages for n in p] == everything
    assert client.get("/api/v1/nodes", params={"offset": 2}).json() == everything[2:]
    assert client.get("/api/v1/nodes", params={"limit": 0}).status_code == 422


# the token note ---------------------------------------------------------------------------------------------
@pytest.fixture
def token_app(make_settings: Callable[..., Settings], db_url: str) -> Iterator[tuple[TestClient, Service, str]]:
    """The app on SQLite and on PostgreSQL, with a fresh auditor token (never used yet)."""
    service, _headers = make_client(make_settings(database_url=db_url))
    with service.factory() as session, session.begin():
        user = auth.add_user(session, username="r-dung-token", password="mat-khau-thu", role="auditor")
        token = auth.create_token(session, user, "thu")
    with TestClient(create_app(service, manage=False)) as test_client:
        test_client.headers.update({"Authorization": f"Bearer {token}"})
        yield test_client, service, token
    service.engine.dispose()


def last_used(service: Service, token: str) -> dt.datetime | None:
    with service.factory() as session:
        return session.scalar(select(ApiToken.last_used_at).where(ApiToken.token_sha256 == auth._sha256(token)))


def test_token_use_is_noted_at_most_once_a_minute(token_app: tuple[TestClient, Service, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first request notes the use; the next ones within a minute write nothing; a minute on, it is noted again."""
    client, service, token = token_app
    assert last_used(service, token) is None
    assert client.get("/api/v1/zones").status_code == 200
    first = last_used(service, token)
    assert first is not None and abs((utcnow() - first).total_seconds()) < 60
    for _ in range(3):
        assert client.get("/api/v1/zones").status_code == 200
    assert last_used(service, token) == first
    # A minute later (in the database and in this process) the next request notes it again.
    with service.factory() as session, session.begin():
        session.execute(update(ApiToken).where(ApiToken.token_sha256 == auth._sha256(token))
                        .values(last_used_at=first - dt.timedelta(minutes=2)))
    real = time.monotonic
    monkeypatch.setattr(auth.time, "monotonic", lambda: real() + auth.TOKEN_TOUCH_S)
    assert client.get("/api/v1/zones").status_code == 200
    again = last_used(service, token)
    assert again is not None and again > first - dt.timedelta(minutes=1)


def test_a_busy_database_does_not_fail_a_read(token_app: tuple[TestClient, Service, str]) -> None:
    """Another connection holds the write lock (SQLite) or the token's row (PostgreSQL): reads answer 200, fast."""
    client, service, token = token_app
    with _locked(service, token):
        began = time.monotonic()
        r = client.get("/api/v1/zones")
        took = time.monotonic() - began
        assert r.status_code == 200, r.text
        assert took < 10, f"the read waited {took:.1f} s for the lock"  # the busy timeout is 30 s
        assert client.get("/api/v1/nodes").status_code == 200  # not retried for a minute: no wait at all
    assert last_used(service, token) is None  # skipped, not half-written
    assert client.get("/api/v1/zones").status_code == 200


class _locked:
    """Hold what the token note needs: SQLite's write lock, or PostgreSQL's lock on the token's row."""

    def __init__(self, service: Service, token: str) -> None:
        self.url, self.sha = service.settings.db_url, auth._sha256(token)
        self.closers: list[Callable[[], object]] = []

    def __enter__(self) -> None:
        if self.url.startswith("sqlite"):
            conn = sqlite3.connect(sa.make_url(self.url).database or "", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            self.closers.append(conn.close)
            self.closers.insert(0, lambda: conn.execute("ROLLBACK"))
            return
        engine = make_engine(self.url)
        pg = engine.connect()
        pg.execute(select(ApiToken.id).where(ApiToken.token_sha256 == self.sha).with_for_update())
        self.closers += [pg.rollback, pg.close, engine.dispose]

    def __exit__(self, *_exc: object) -> None:
        for close in self.closers:
            close()
