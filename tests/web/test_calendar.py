"""The iCalendar feed: subscribable from a phone with a read-only token, group names as the location, 404s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from radio.db import migrate
from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from radio.web.programme_api import calendar_token
from tests.conftest import DEMO, role_headers

ICS = "/api/v1/calendar.ics"


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, Service, dict[str, dict[str, str]]]]:
    service = Service(make_settings())
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    headers = role_headers(service)
    with TestClient(create_app(service, manage=False)) as client:
        yield client, service, headers
    service.engine.dispose()


def events(text: str) -> list[dict[str, str]]:
    """The VEVENTs, unfolded, as property dicts."""
    unfolded = text.replace("\r\n ", "")
    out: list[dict[str, str]] = []
    for block in unfolded.split("BEGIN:VEVENT\r\n")[1:]:
        props = dict(line.split(":", 1) for line in block.split("\r\n") if ":" in line)
        out.append(props)
    return out


def test_a_calendar_app_subscribes_with_the_token_from_the_header(
    app: tuple[TestClient, Service, dict[str, dict[str, str]]],
) -> None:
    """Officers and admins get the subscription URL (with its token) in X-Calendar-URL; that URL works with no
    header or cookie, for that zone only; a wrong or missing token is a 401 and opens nothing else."""
    client, service, headers = app
    r = client.get(ICS, params={"zone": "tdp-4", "days": 7}, headers=headers["officer"])
    assert r.status_code == 200
    url = urlsplit(r.headers["X-Calendar-URL"])
    assert url.path == ICS and url.geturl().startswith(service.settings.public_base_url or "")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["zone"] == "tdp-4" and query["token"] == calendar_token(service.settings, "tdp-4")

    phone = client.get(ICS, params={**query, "days": 7})  # no Authorization header, no cookie
    assert phone.status_code == 200 and phone.headers["content-type"].startswith("text/calendar")
    assert [e["UID"] for e in events(phone.text)] == [e["UID"] for e in events(r.text)] != []
    assert "X-Calendar-URL" not in phone.headers  # the token does not hand out tokens

    assert client.get(ICS, params={"zone": "tdp-1", "token": query["token"]}).status_code == 401  # other zone
    assert client.get(ICS, params={"token": query["token"]}).status_code == 401  # the whole ward
    assert client.get(ICS, params={"zone": "tdp-4", "token": "x" * 43}).status_code == 401
    assert client.get(ICS, params={"zone": "tdp-4", "token": "mã-sai"}).status_code == 401
    assert client.get(ICS, params={"zone": "tdp-4"}).status_code == 401  # no token, no login: as before
    whole = client.get(ICS, params={"token": calendar_token(service.settings, None)})
    assert whole.status_code == 200 and whole.text.count("BEGIN:VEVENT") > 0
    # The calendar token opens only the calendar.
    assert client.get("/api/v1/bulletins", params={"token": query["token"]}).status_code == 401
    assert client.get("/api/v1/zones", params={"token": query["token"]}).status_code == 401


def test_token_url_is_shown_to_admins_and_officers_only(
    app: tuple[TestClient, Service, dict[str, dict[str, str]]],
) -> None:
    """Approvers and auditors read the calendar but are not handed the subscription token."""
    client, _service, headers = app
    for role, shown in (("admin", True), ("officer", True), ("approver", False), ("auditor", False)):
        r = client.get(ICS, params={"days": 2}, headers=headers[role])
        assert r.status_code == 200 and ("X-Calendar-URL" in r.headers) is shown, role


def test_group_only_slots_are_located_at_their_groups(
    app: tuple[TestClient, Service, dict[str, dict[str, str]]],
) -> None:
    """A slot playing on a named group (the market's loudspeakers) is not labelled "toàn phường"."""
    client, _service, headers = app
    text = client.get(ICS, params={"days": 14}, headers=headers["officer"]).text
    market = [e for e in events(text) if e["UID"].startswith("khu-cho-cuoi-tuan-")]
    assert market, "the weekend market slot should be in the next 14 days"
    assert {e["LOCATION"] for e in market} == {"Cụm loa khu chợ Thọ Xương"}
    whole_ward = [e for e in events(text) if e["UID"].startswith("tiep-am-dai-thanh-pho-")]
    assert whole_ward and {e["LOCATION"] for e in whole_ward} == {"toàn phường"}


def test_an_unknown_zone_is_a_404_naming_it(app: tuple[TestClient, Service, dict[str, dict[str, str]]]) -> None:
    client, service, headers = app
    r = client.get(ICS, params={"zone": "tdp-99"}, headers=headers["officer"])
    assert r.status_code == 404 and "tdp-99" in r.text
    r = client.get(ICS, params={"zone": "tdp-99", "token": calendar_token(service.settings, "tdp-99")})
    assert r.status_code == 404 and "tdp-99" in r.text
