"""Batches for the events agent: small and at once when caught up, large when behind.

Faust's ``Stream.noack_take(max_, within)`` waits the whole ``within`` window
for every batch that does not fill up, and it stops buffering while the agent
works on the previous batch. One window is then wrong at both ends: at a light
load every event waits up to ``within`` for nothing (measured: 50 ms put ~25 ms
on the median event->recommendation latency at 1,000 events/s), and a short
window shrinks the batches of a backlog until the per-batch costs dominate
(5 ms: 8.1k -> 5.6-6.7k events/s).

:class:`Batcher` asks the consumer instead. A batch is handed over as soon as

* it holds ``max_`` events; or
* its newest event is the last one the broker had for that partition when it
  was fetched (``offset + 1 >= highwater``): the worker is caught up, and
  waiting would only add latency; or
* its oldest event has waited ``max_wait_s`` (a bound, whatever the highwater says).

While behind, a batch keeps filling up to ``max_``. Events are buffered while
the agent works on the previous batch too (the taken batch is a copy), so a
busy agent finds its next batch ready: the batch size follows the load. A full
buffer holds its feed back until the agent takes the batch. In the worker the
feed is the fetch loop itself (:mod:`stream.intake`); :func:`adaptive_take`
also feeds it from the agent's Faust stream (the functional tests send there).

Nothing is acknowledged here: like ``noack_take``, the agent acks each event
once its outputs are delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from faust.types import EventT, StreamT

#: ``behind(message)``: is there more in the message's partition than has been fetched?
Behind = Callable[[Any], bool]


def behind_highwater(highwater: Callable[[Any], int | None]) -> Behind:
    """``behind`` from a consumer's last known end offset per partition (None: unknown).

    Called for every event: an end already seen beyond the event answers without
    asking the consumer again (an end offset only grows); the consumer is asked
    only near the end, where the answer can change.
    """
    ends: dict[Any, int] = {}

    def behind(message: Any) -> bool:
        tp, next_offset = message.tp, message.offset + 1
        if next_offset < ends.get(tp, -1):
            return True
        end = highwater(tp)
        if end is None:
            return False
        ends[tp] = end
        return next_offset < end

    return behind


class Batcher:
    """The batch being filled, and the rules for handing it over (module docstring).

    Fed by the stream's processor in :func:`adaptive_take`, or straight from the
    fetch loop (:class:`stream.intake.DirectIntake`); one agent takes from it.
    """

    def __init__(
        self,
        max_: int,
        max_wait_s: float,
        behind: Behind,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_ < 1 or max_wait_s <= 0:
            raise ValueError(f"need max_ >= 1 and max_wait_s > 0, got {max_}, {max_wait_s}")
        self.max = max_
        self.max_wait_s = max_wait_s
        self._behind = behind
        self._clock = clock
        self._buffer: list[EventT] = []
        self._first_at = 0.0  # arrival time of _buffer[0]
        self.ready = asyncio.Event()  # a batch may go: full, or caught up
        self.room = asyncio.Event()  # the buffer has room again
        self.room.set()

    def __len__(self) -> int:
        return len(self._buffer)

    def bind(self) -> None:
        """Fresh events for the running loop; call when the agent starts taking.

        An asyncio.Event belongs to the loop that first waits on it, and an app
        (with its batcher) may outlive a loop: each test's ``asyncio.run``. The
        state carries over; a feed still waiting on the old ``room`` is let go
        (it then adds, and waits on the new one).
        """
        ready, room = asyncio.Event(), asyncio.Event()
        if self.ready.is_set():
            ready.set()
        if self.room.is_set():
            room.set()
        old_room, self.ready, self.room = self.room, ready, room
        old_room.set()

    def add(self, event: EventT) -> asyncio.Event | None:
        """Buffer ``event``. The buffer is full when this returns an event: wait
        for it before adding more (None: go on)."""
        buffer = self._buffer
        if not buffer:
            self._first_at = self._clock()
        buffer.append(event)
        if len(buffer) >= self.max:
            self.ready.set()
            self.room.clear()
            return self.room
        if not self.ready.is_set() and not self._behind(event.message):
            self.ready.set()
        return None

    def wait_s(self) -> float:
        """How long a batch may still wait (the window, when the buffer is empty)."""
        if not self._buffer:
            return self.max_wait_s
        return self.max_wait_s - (self._clock() - self._first_at)

    def due(self) -> bool:
        """Whether a batch should go now: full, caught up, or its window is over."""
        return bool(self._buffer) and (self.ready.is_set() or self.wait_s() <= 0)

    def take(self) -> list[EventT]:
        """Hand over up to ``max_`` events, oldest first."""
        buffer = self._buffer
        batch = buffer[: self.max]
        del buffer[: self.max]
        self.ready.clear()
        if buffer:  # (only when two feeds filled it at once)
            self._first_at = self._clock()
            if len(buffer) >= self.max:
                self.ready.set()
                return batch
        self.room.set()
        return batch


async def adaptive_take(stream: StreamT, batcher: Batcher) -> AsyncIterator[list[EventT]]:
    """Yield the batches of ``batcher`` (see the module docstring); never acks.

    The stream's events are added to ``batcher`` with the same stream hooks as
    Faust's own ``noack_take`` (a buffering processor on a passively drained
    stream; faust-streaming is pinned <0.16). The fetch loop may add to it too.
    """
    s: Any = stream  # the hooks below are Stream's, not StreamT's
    batcher.bind()

    async def add_to_buffer(value: Any) -> Any:
        event = s.current_event
        if event is None:
            raise RuntimeError("adaptive_take: stream has no current event")
        full = batcher.add(event)
        if full is not None:
            await s.wait(full)  # a full buffer holds the stream back until taken
        return value

    stream_enable_acks = s.enable_acks
    s.enable_acks = False  # the agent acks, after delivery
    s.add_processor(add_to_buffer)
    s._enable_passive(s.channel.__aiter__())
    try:
        while not s.should_stop:
            if not batcher.due():
                # Empty: wait for a first event that is a batch by itself (or the
                # window, then look again); else: for the oldest event's deadline.
                left = batcher.wait_s()
                if left > 0:
                    await s.wait_for_stopped(batcher.ready, timeout=left)
                if not batcher.due():
                    continue
            yield batcher.take()
    finally:
        s.enable_acks = stream_enable_acks
        s._processors.remove(add_to_buffer)
