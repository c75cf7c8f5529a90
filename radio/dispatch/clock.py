"""NTP-style clock sync over MQTT: the service's responder and the node's offset estimator.

A node publishes ``ClockRequest(t0)`` on ``clock/<node>`` (t0 = its own clock); the service stamps
``t1`` on receipt and ``t2`` just before answering on ``clock/<node>/reply``; the node stamps ``t3`` on
receipt. Then, as in NTP::

    offset = ((t1 - t0) + (t2 - t3)) / 2      server clock minus node clock
    delay  = (t3 - t0) - (t2 - t1)            round trip spent on the wire and in queues

The error of ``offset`` is at most ``delay / 2`` (all of it from asymmetric queueing), so the node keeps
the sample with the smallest delay among its recent ones.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from radio.dispatch import topics
from radio.dispatch.messages import BadMessage, ClockReply, ClockRequest, parse

log = logging.getLogger(__name__)
Publisher = Callable[[str, bytes], object]


class ClockResponder:
    """Answers clock requests straight from the MQTT thread: no queue between t1 and t2."""

    def __init__(self, site: str, clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.clock = clock
        self.publish: Publisher | None = None
        self.answered = 0
        self.dropped = 0

    def wrap(self, other: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
        """A message handler that answers clock requests itself and hands everything else to ``other``."""

        def route(topic: str, payload: bytes) -> None:
            if topics.kind_of(topic) == "clock":
                self.handle(topic, payload)
            else:
                other(topic, payload)

        return route

    def handle(self, topic: str, payload: bytes) -> None:
        t1 = self.clock()
        try:
            request = parse(ClockRequest, payload)
        except BadMessage as exc:
            self.dropped += 1
            log.warning("dropped a clock request on %s: %s", topic, exc)
            return
        node = topics.node_of(topic)
        if request.node != node:
            self.dropped += 1
            log.warning("dropped a clock request for %r published on the topic of %r", request.node, node)
            return
        if self.publish is None:
            return
        # t2 is stamped as late as possible: the answer's own serialisation is not network delay.
        reply = ClockReply(id=request.id, t0=request.t0, t1=t1, t2=self.clock())
        self.publish(topics.clock_reply(self.site, node), reply.dumps())
        self.answered += 1


@dataclass(frozen=True)
class Sample:
    offset_s: float
    delay_s: float
    at: float  # node's local clock when taken


def sample(t0: float, t1: float, t2: float, t3: float, at: float | None = None) -> Sample:
    """One NTP exchange → (offset, delay); ``at`` defaults to ``t3``."""
    return Sample(offset_s=((t1 - t0) + (t2 - t3)) / 2, delay_s=max(0.0, (t3 - t0) - (t2 - t1)),
                  at=t3 if at is None else at)


class OffsetEstimator:
    """Keeps the last ``window`` samples; the estimate is the offset of the one with the smallest delay.

    Samples older than ``max_age_s`` are forgotten so that a drifting clock is followed.
    """

    def __init__(self, window: int = 16, max_age_s: float = 3600.0) -> None:
        self.samples: deque[Sample] = deque(maxlen=window)
        self.max_age_s = max_age_s

    def add(self, s: Sample) -> None:
        self.samples.append(s)

    def best(self, now_local: float) -> Sample | None:
        fresh = [s for s in self.samples if now_local - s.at <= self.max_age_s]
        return min(fresh, key=lambda s: s.delay_s) if fresh else None
