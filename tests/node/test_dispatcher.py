"""The fleet's burst dispatcher: received messages are handled after a burst of receipts, in order, each isolated."""

from __future__ import annotations

import asyncio

from radio.node.simulator import BurstDispatcher, StartBatcher


async def _drain(dispatcher: BurstDispatcher, done: list[object], count: int) -> None:
    for _ in range(2000):
        if len(done) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {len(done)} of {count} handled")


def test_messages_are_handled_later_in_arrival_order_and_a_failure_stays_local() -> None:
    """Nothing runs inside the receipt itself; all run, in order, in small slices; one raising stops none of the rest."""

    async def main() -> None:
        dispatcher = BurstDispatcher(quiet_s=0.001, slice_s=0.0)
        done: list[object] = []

        def handle(i: int) -> None:
            if i == 3:
                raise RuntimeError("a bad message")
            done.append(i)

        for i in range(50):
            dispatcher(lambda i=i: handle(i))  # type: ignore[misc]
        assert done == []  # deferred: the receipt loop only queues
        await _drain(dispatcher, done, 49)
        assert done == [i for i in range(50) if i != 3]
        dispatcher(lambda: done.append("later"))  # a new burst after the dispatcher went idle
        await _drain(dispatcher, done, 50)
        assert done[-1] == "later"

    asyncio.run(main())


def test_the_start_batcher_begins_each_node_at_its_own_instant_then_resumes_them() -> None:
    """Nodes due at one instant begin in one pass, in deadline order, before any of their tasks resumes; a node
    whose wait was cancelled (stopped meanwhile) is skipped; later deadlines still begin at their own time."""

    async def main() -> None:
        starter = StartBatcher(gap_s=0.01, max_hold_s=5.0)
        log: list[str] = []

        async def node(name: str, delay: float) -> None:
            await starter(delay, lambda: log.append(f"begin {name}"))
            log.append(f"resume {name}")

        tasks = [asyncio.create_task(node(n, d)) for n, d in (("b", 0.03), ("a", 0.02), ("c", 0.0201), ("late", 0.3))]
        stopped = asyncio.create_task(node("stopped", 0.02))
        await asyncio.sleep(0)
        stopped.cancel()
        await asyncio.gather(*tasks)
        assert log[:3] == ["begin a", "begin c", "begin b"]  # one batch: all begun before any resumes
        assert sorted(log[3:6]) == ["resume a", "resume b", "resume c"]
        assert log[6:] == ["begin late", "resume late"] and "begin stopped" not in log

    asyncio.run(main())
