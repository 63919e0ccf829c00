"""stream.take: batches as the events agent takes them, fed as the fetch loop feeds
them (DirectIntake), on a Faust app with no broker.

``behind`` is the only input that stands in for the broker: here it reads the
event's value, so each test says which events have more waiting behind them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.transport.consumer import ConsumerMessage
from faust.types import TP
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.take import Batcher, DirectIntake, adaptive_take, behind_highwater

TP0 = TP("events", 0)

Taken = list[tuple[float, list[int]]]


async def _run(
    values: list[int],
    *,
    max_: int,
    max_wait_s: float,
    behind: Callable[[Any], bool],
    until: Callable[[Taken], bool],
    between: float = 0.0,
    work_s: float = 0.0,
    timeout_s: float = 10.0,
) -> Taken:
    """Offer ``values`` (``between`` s apart); collect (time, batch) until ``until``."""
    app = faust.App("take-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    app.flow_control.resume()
    stream = app.stream(app.channel())  # the agent's: the batches stop with it
    taken: Taken = []
    batcher = Batcher(max_, max_wait_s, behind)
    intake = DirectIntake(app, batcher, [TP0.topic], WorkerMetrics())

    async def consume() -> None:
        async for batch in adaptive_take(stream, batcher):
            taken.append((time.monotonic(), [int(event.value) for event in batch]))
            if until(taken):
                return
            if work_s:
                await asyncio.sleep(work_s)  # the agent busy with the batch

    async def produce() -> None:
        for offset, v in enumerate(values):
            message = ConsumerMessage(TP0.topic, TP0.partition, offset, 0.0, 0, [], b"u",
                                      str(v).encode(), None, tp=TP0, generation_id=0)  # fmt: skip
            full = intake.offer(message)
            if full is not None:  # a full batcher holds the fetch loop back
                await full
            if between:
                await asyncio.sleep(between)

    async with stream:
        started = time.monotonic()
        consumer = asyncio.ensure_future(consume())
        await produce()
        await asyncio.wait_for(consumer, timeout_s)
    return [(t - started, batch) for t, batch in taken]


def _value_behind(waiting: set[int]) -> Callable[[Any], bool]:
    """``behind`` for these records: true for the values in ``waiting``."""

    def behind(message: Any) -> bool:
        return int(message.value) in waiting

    return behind


def _run_sync(coro: Awaitable[Taken]) -> Taken:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_caught_up_events_go_at_once_not_after_the_window() -> None:
    taken = _run_sync(
        _run([1, 2, 3], max_=100, max_wait_s=5.0, behind=lambda m: False, between=0.05,
             until=lambda t: sum(len(b) for _, b in t) >= 3)
    )  # fmt: skip
    assert [v for _, b in taken for v in b] == [1, 2, 3]
    # A 5 s window would have held them; each went within a fraction of that.
    assert taken[-1][0] < 2.0


def test_behind_fills_the_batch_up_to_max() -> None:
    values = list(range(10))
    taken = _run_sync(
        _run(values, max_=4, max_wait_s=5.0, behind=_value_behind(set(values[:-1])),
             until=lambda t: sum(len(b) for _, b in t) >= 10)
    )  # fmt: skip
    batches = [b for _, b in taken]
    assert batches[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches while behind
    assert [v for b in batches for v in b] == values  # order kept, nothing lost or repeated
    assert all(len(b) <= 4 for b in batches)
    assert taken[-1][0] < 2.0  # the last one (caught up) did not wait out the window


def test_behind_but_nothing_more_comes_waits_the_window_then_goes() -> None:
    taken = _run_sync(
        _run([1, 2], max_=100, max_wait_s=0.3, behind=lambda m: True,
             until=lambda t: sum(len(b) for _, b in t) >= 2)
    )  # fmt: skip
    assert [b for _, b in taken] == [[1, 2]]
    assert 0.25 <= taken[0][0] < 2.0


def test_events_are_buffered_while_the_agent_works() -> None:
    # 30 events 10 ms apart, each caught up; the agent takes 100 ms per batch:
    # later batches hold what arrived meanwhile instead of one event each.
    values = list(range(30))
    taken = _run_sync(
        _run(values, max_=100, max_wait_s=5.0, behind=lambda m: False, between=0.01, work_s=0.1,
             until=lambda t: sum(len(b) for _, b in t) >= 30)
    )  # fmt: skip
    batches = [b for _, b in taken]
    assert [v for b in batches for v in b] == values
    assert len(batches) <= 10
    assert max(len(b) for b in batches) >= 5


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_"):
        _run_sync(_run([1], max_=0, max_wait_s=1.0, behind=lambda m: False, until=lambda t: True))


def test_behind_highwater_compares_the_next_offset_with_the_end() -> None:
    class Msg:
        def __init__(self, tp: str, offset: int) -> None:
            self.tp, self.offset = tp, offset

    ends: dict[str, int | None] = {"a": 10, "b": None}
    asked: list[str] = []

    def highwater(tp: str) -> int | None:
        asked.append(tp)
        return ends[tp]

    behind = behind_highwater(highwater)
    assert behind(Msg("a", 8))  # offset 9 is still at the broker
    assert not behind(Msg("a", 9))  # the last one there
    assert not behind(Msg("b", 0))  # unknown end: treated as caught up
    # Far from a known end the consumer is not asked again; near it, it is.
    asked.clear()
    assert behind(Msg("a", 3))
    assert asked == []
    ends["a"] = 12
    assert behind(Msg("a", 9))  # the end moved on: asked, and behind again
    assert asked == ["a"]
