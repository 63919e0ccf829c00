"""Faust's fetch loop without four tasks per record.

faust-streaming 0.15.3's ``Consumer._drain_messages`` hands each fetched record
to the conductor with ``await self.wait_first(callback(message),
self.suspend_flow.wait())``. ``wait_first`` wraps the callback, the
suspend-flow wait and the service's stopped and crashed events in four tasks,
runs ``asyncio.wait`` over them and cancels the three losers: for every record,
although the callback nearly always finishes without waiting at all (it puts
the record into a channel queue that has room). Measured with py-spy in the
200k-event stream bench: ``wait_first`` alone took 21% of the worker's busy
samples, more than Faust's whole stream and conductor path.

:func:`install` replaces the loop, for one app's consumer, with the same loop
(the same read-offset filter, gap recording, periodic commit and yields)
except for that call: the callback is run up to its first wait right in the
loop. If it finishes there (the common case), nothing else is needed. If it
waits (a full channel queue, flow control suspended, the producer buffer over
its limit), the rest of it runs under Faust's own ``wait_first`` as before, so
a rebalance (``suspend_flow``) or a stop still frees the loop and cancels the
callback. The one difference: a callback that finishes without waiting runs in
the loop's task instead of one of its own, which the conductor's callback does
not notice (it sets no context variables and never asks for its task).

faust-streaming is pinned below 0.16; ``tests/unit/test_faust_drain.py`` runs
both loops on the same fetches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING

log = logging.getLogger(__name__)

#: Faust yields to the event loop after this many records of one fetch.
YIELD_EVERY = 100


class _Rest:
    """The rest of a coroutine that was stepped by hand up to its first wait.

    Awaiting it continues the coroutine exactly as ``yield from`` would have
    done from that point: the future it waits on is handed to the task, and
    values and exceptions (a cancellation) are passed through.
    """

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on, as yield from does
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def start(coro: Coroutine[Any, Any, Any]) -> _Rest | None:
    """Run ``coro`` up to its first wait: None if it finished, else the rest of it.

    An exception it raises before waiting is raised here.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, waiting_on)


#: ``offer(message)``: takes a record past the conductor; an awaitable: wait
#: for it before the next record (stream.intake.DirectIntake.offer).
Offer = Callable[[Any], Awaitable[Any] | None]


async def _drain_messages(self: Any, offers: Mapping[str, Offer], fetcher: Any) -> None:
    """``Consumer._drain_messages`` of faust-streaming 0.15.3 (BSD licence), with
    the callback started in the loop, and the records of the topics in
    ``offers`` handed to their offer instead (see the module docstring).
    ``self`` is the consumer; the names and order of the steps follow Faust's."""
    callback = self.callback
    offer_for = offers.get
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
            # As Faust: getmany may return at once in a loop; let others run.
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > YIELD_EVERY:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        offer = offer_for(message.topic)
                        if offer is not None:
                            rest = offer(message)
                        else:
                            rest = start(callback(message))
                        if rest is not None:
                            # It waits: as Faust, a rebalance or a stop frees the loop.
                            await self.wait_first(rest, suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                     offset, message.key, message.value)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def install(app: faust.App, offers: Mapping[str, Offer] | None = None) -> None:
    """Use the loop above for ``app``'s consumer (call before the app starts).

    ``offers``: topic -> the offer that takes its records instead of the
    conductor (stream.intake); the other topics go to the conductor.
    """
    consumer = app.consumer
    consumer._drain_messages = functools.partial(_drain_messages, consumer, dict(offers or {}))
