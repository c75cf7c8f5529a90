"""NTP-style clock sync: the arithmetic, the estimator's choice and the service's responder."""

from __future__ import annotations

import json

import pytest

from radio.dispatch import topics
from radio.dispatch.clock import ClockResponder, OffsetEstimator, sample
from radio.dispatch.messages import ClockReply, ClockRequest, parse


def test_offset_and_delay_from_one_exchange() -> None:
    """A node 3 s behind with 40 ms each way and 5 ms at the server: offset +3 s, delay 80 ms."""
    t0 = 100.0
    t1 = t0 + 3.0 + 0.040
    t2 = t1 + 0.005
    t3 = t2 - 3.0 + 0.040
    s = sample(t0, t1, t2, t3)
    assert s.offset_s == pytest.approx(3.0) and s.delay_s == pytest.approx(0.080)


def test_asymmetric_queueing_costs_at_most_half_the_delay_and_the_quickest_sample_wins() -> None:
    """The estimator keeps the sample with the smallest round trip, whose error bound is the smallest."""
    est = OffsetEstimator(window=8)
    true_offset = -5.0
    for up, down in [(0.200, 0.010), (0.002, 0.002), (0.050, 0.300)]:
        t0 = 1000.0
        t1 = t0 + true_offset + up
        t2 = t1
        t3 = t2 - true_offset + down
        s = sample(t0, t1, t2, t3)
        assert abs(s.offset_s - true_offset) <= s.delay_s / 2 + 1e-9
        est.add(s)
    best = est.best(now_local=1000.0)
    assert best is not None and best.offset_s == pytest.approx(true_offset, abs=1e-6)


def test_old_samples_are_forgotten() -> None:
    """Samples older than max_age_s no longer count, so a drifting clock is followed."""
    est = OffsetEstimator(max_age_s=60)
    est.add(sample(0, 1, 1, 0, at=0.0))
    assert est.best(now_local=30) is not None and est.best(now_local=61) is None


def test_responder_answers_on_the_nodes_reply_topic_and_drops_forgeries() -> None:
    """A request is answered with t0 echoed and t1 ≤ t2; one naming another node, or garbage, is dropped."""
    ticks = iter([10.0, 10.5, 20.0, 30.0])
    sent: list[tuple[str, bytes]] = []
    other: list[str] = []
    responder = ClockResponder("tx", clock=lambda: next(ticks))
    responder.publish = lambda topic, payload: sent.append((topic, payload))
    route = responder.wrap(lambda topic, payload: other.append(topic))
    route(topics.clock_request("tx", "n1"), ClockRequest(node="n1", id="a1", t0=7.25).dumps())
    route(topics.clock_request("tx", "n1"), ClockRequest(node="n2", id="a2", t0=7.25).dumps())
    route(topics.clock_request("tx", "n1"), b"{")
    route(topics.event("tx", "n1"), b"{}")
    (topic, payload), = sent
    reply = parse(ClockReply, payload)
    assert topic == "radio/v1/tx/clock/n1/reply" and (reply.id, reply.t0, reply.t1, reply.t2) == ("a1", 7.25, 10.0, 10.5)
    assert responder.dropped == 2 and other == [topics.event("tx", "n1")]
    assert json.loads(payload)["v"] == 1


def test_topics_of_heartbeat_and_clock() -> None:
    """Heartbeats and clock requests are node → service topics the service subscribes to; replies are not."""
    subs = topics.service_subscriptions("tx")
    assert "radio/v1/tx/hb/+" in subs and "radio/v1/tx/clock/+" in subs
    assert topics.node_of(topics.heartbeat("tx", "n1")) == "n1" and topics.kind_of(topics.heartbeat("tx", "n1")) == "hb"
    assert topics.kind_of(topics.clock_reply("tx", "n1")) is None
    assert topics.node_inbox("tx", "z", "n1")[-1] == "radio/v1/tx/clock/n1/reply"
