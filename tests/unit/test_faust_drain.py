"""The worker's fetch loop (stream.faust_internals) against Faust's own, on the same fetches.

Both loops run on a real faust-streaming consumer whose ``getmany`` is a
stand-in, as in test_faust_read_offsets: what reaches the callback, and what
happens when a callback waits, fails or is cut short by a rebalance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.types import TP
from recstream.stream import faust_internals

TP0 = TP("events", 0)


class _Record:
    def __init__(self, offset: int, tp: TP = TP0) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.key = self.value = b""


class _Fetches:
    """A stand-in ``getmany``: one fetch per call, then ``done`` is set."""

    def __init__(self, fetches: list[list[tuple[TP, int]]]) -> None:
        self._pending = iter(fetches)
        self.done = asyncio.Event()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        try:
            records = next(self._pending)
        except StopIteration:
            self.done.set()
            await asyncio.sleep(timeout)
            return
        for tp, offset in records:
            yield tp, _Record(offset, tp)


Callback = Callable[[Any, Any], Awaitable[None]]


async def _drain(ours: bool, fetches: list[list[int]], callback: Callback) -> tuple[list[int], int]:
    """Run a loop over ``fetches``; return the offsets the callback finished and the
    number of ``wait_first`` calls the loop made."""
    app = faust.App("drain-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer = app.consumer
    if ours:
        faust_internals.install_fetch_loop(app)
    broker = _Fetches([[(TP0, offset) for offset in fetch] for fetch in fetches])
    finished: list[int] = []
    calls = 0
    faust_wait_first = consumer.wait_first

    async def wait_first(*coros: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await faust_wait_first(*coros, **kwargs)

    async def on_message(message: Any) -> None:
        await callback(consumer, message)
        finished.append(message.offset)

    consumer.getmany = broker.getmany
    consumer.callback = on_message
    consumer.wait_first = wait_first
    drain = asyncio.ensure_future(consumer._drain_messages(faust.Service()))
    waiter = asyncio.ensure_future(broker.done.wait())
    await asyncio.wait([drain, waiter], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    drain.cancel()
    results = await asyncio.gather(drain, return_exceptions=True)
    if isinstance(results[0], Exception):
        raise results[0]
    return finished, calls


async def _at_once(consumer: Any, message: Any) -> None:
    pass


async def _odd_ones_wait(consumer: Any, message: Any) -> None:
    if message.offset % 2:
        await asyncio.sleep(0.001)


FETCHES = [[0, 1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("ours", [False, True], ids=["faust", "ours"])
@pytest.mark.parametrize("callback", [_at_once, _odd_ones_wait], ids=["at-once", "some-wait"])
def test_same_records_in_the_same_order(ours: bool, callback: Callback) -> None:
    finished, _ = asyncio.run(_drain(ours, FETCHES, callback))
    assert finished == list(range(7))


def test_a_callback_that_does_not_wait_needs_no_wait_first() -> None:
    # The point of the loop: Faust's makes four tasks for each record.
    assert asyncio.run(_drain(False, FETCHES, _at_once))[1] == 7
    assert asyncio.run(_drain(True, FETCHES, _at_once))[1] == 0
    # A callback that waits still runs under wait_first (a rebalance frees the loop).
    assert asyncio.run(_drain(True, FETCHES, _odd_ones_wait))[1] == 3


@pytest.mark.parametrize("ours", [False, True], ids=["faust", "ours"])
def test_suspended_flow_frees_the_loop_from_a_waiting_callback(ours: bool) -> None:
    # A callback stuck (a full queue) when a rebalance suspends the flow: the
    # loop gives up on it, the callback is cancelled, the next records go on.
    cancelled: list[int] = []

    async def stuck_at_2(consumer: Any, message: Any) -> None:
        if message.offset == 2:
            asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(message.offset)
                raise

    finished, _ = asyncio.run(_drain(ours, FETCHES, stuck_at_2))
    assert finished == [0, 1, 3, 4, 5, 6]
    assert cancelled == [2]


@pytest.mark.parametrize("wait_first", [False, True], ids=["at-once", "after-a-wait"])
@pytest.mark.parametrize("ours", [False, True], ids=["faust", "ours"])
def test_a_failing_callback_stops_the_loop_with_its_error(ours: bool, wait_first: bool) -> None:
    async def fails_at_1(consumer: Any, message: Any) -> None:
        if message.offset == 1:
            if wait_first:
                await asyncio.sleep(0.001)
            raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(_drain(ours, FETCHES, fails_at_1))


def test_start_runs_a_coroutine_to_its_first_wait_and_the_rest_continues_it() -> None:
    async def main() -> None:
        steps: list[str] = []
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def work() -> str:
            steps.append("before")
            got = await gate
            steps.append(got)
            await asyncio.sleep(0)
            return "result"

        rest = faust_internals.start(work())
        assert steps == ["before"] and rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        gate.set_result("after")
        assert await task == "result"
        assert steps == ["before", "after"]

        async def quick() -> int:
            return 1

        assert faust_internals.start(quick()) is None

    asyncio.run(main())


def test_the_rest_passes_a_cancellation_into_the_coroutine() -> None:
    async def main() -> None:
        seen: list[str] = []

        async def work() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        rest = faust_internals.start(work())
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled"]

    asyncio.run(main())


def test_records_of_an_offered_topic_go_to_the_offer_the_rest_to_the_conductor() -> None:
    async def main() -> list[tuple[str, int]]:
        app = faust.App("drain-offer-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        consumer = app.consumer
        got: list[tuple[str, int]] = []
        gate = asyncio.Event()
        broker = _Fetches([[(TP0, 0), (TP("other", 0), 1), (TP0, 2)]])

        def offer(message: Any) -> Any:
            got.append(("offer", message.offset))
            if message.offset == 0:  # "the batcher is full": the loop waits
                asyncio.get_running_loop().call_later(0.01, gate.set)
                return gate.wait()
            return None

        async def on_message(message: Any) -> None:
            assert gate.is_set(), "the loop went on before the offer's wait was over"
            got.append(("conductor", message.offset))

        faust_internals.install_fetch_loop(app, {TP0.topic: offer})
        consumer.getmany = broker.getmany
        consumer.callback = on_message
        drain = asyncio.ensure_future(consumer._drain_messages(faust.Service()))
        await asyncio.wait_for(broker.done.wait(), 10)
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        return got

    got = asyncio.run(main())
    assert got == [("offer", 0), ("conductor", 1), ("offer", 2)]


def test_faust_is_pinned_to_the_version_the_internals_were_written_against() -> None:
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pin = f"faust-streaming=={faust_internals.FAUST_VERSION}"
    assert pin in pyproject["project"]["dependencies"]
    assert version("faust-streaming") == faust_internals.FAUST_VERSION
    faust_internals.check_version()


def test_another_faust_version_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_internals, "version", lambda name: "0.16.0")
    with pytest.raises(faust_internals.FaustVersionError,
                       match=r"faust-streaming 0\.16\.0 is installed.*faust-streaming==0\.15\.3"):
        faust_internals.check_version()
