"""Wire schema of protocol v1: what is accepted, what is refused and why."""

from __future__ import annotations

import json

import pytest

from radio.dispatch import topics
from radio.dispatch.messages import MAX_PAYLOAD_BYTES, BadMessage, Command, Event, EventType, NodeState, parse

EVENT = {"v": 1, "node": "loa-tdp1-a", "command_id": "abc", "event": "finished", "at": "2026-11-27T06:30:00Z",
         "played_s": 12.5}


def test_valid_event_round_trips() -> None:
    """A valid event parses, and its JSON form parses back to the same value."""
    event = parse(Event, json.dumps(EVENT).encode())
    assert event.event is EventType.FINISHED and event.played_s == 12.5
    assert parse(Event, event.dumps()) == event


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
    (b"x" * (MAX_PAYLOAD_BYTES + 1), "too large"),
    (json.dumps({**EVENT, "v": 2}).encode(), "v"),
    (json.dumps({**EVENT, "event": "exploded"}).encode(), "event"),
    (json.dumps({**EVENT, "at": "yesterday"}).encode(), "at"),
    (json.dumps({**EVENT, "at": "2026-11-27T06:30:00"}).encode(), "at"),
    (json.dumps({**EVENT, "node": "../../etc"}).encode(), "node"),
    (json.dumps({**EVENT, "played_s": -1}).encode(), "played_s"),
])
def test_bad_events_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    """Malformed, deep, oversize, naive-time or wrong-typed payloads raise BadMessage naming the problem."""
    with pytest.raises(BadMessage, match=reason):
        parse(Event, payload)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    """Extra fields a newer node might send do not make an event invalid."""
    assert parse(NodeState, json.dumps({"v": 1, "node": "n1", "online": True, "session": 3,
                                        "firmware": "2.0"}).encode()).session == 3


def test_command_requires_aware_times() -> None:
    """Commands carry UTC-aware instants; a naive valid_until is refused."""
    body = {"v": 1, "id": "c1", "type": "play", "issued_at": "2026-11-27T06:30:00Z",
            "valid_until": "2026-11-27T06:40:00"}
    with pytest.raises(BadMessage, match="valid_until"):
        parse(Command, json.dumps(body).encode())


def test_topic_tree() -> None:
    """Topics follow radio/v1/<site>/...; the node id is recovered only from state and event topics."""
    assert topics.cmd_zone("tx", "tdp-1") == "radio/v1/tx/cmd/zone/tdp-1"
    assert topics.node_subscriptions("tx", "tdp-1", "n1") == [
        "radio/v1/tx/cmd/all", "radio/v1/tx/cmd/zone/tdp-1", "radio/v1/tx/cmd/node/n1"]
    assert topics.node_of(topics.event("tx", "n1")) == "n1"
    assert topics.node_of(topics.state("tx", "n1")) == "n1"
    assert topics.node_of(topics.cmd_node("tx", "n1")) is None
    assert topics.node_of("radio/v1/tx/evt/n1/extra") is None
