"""The events agent's input: records from the fetch loop, batched by the load.

Faust's ``take(max_, within)`` waits the whole window for every batch that does
not fill (latency at a light load), while a short window shrinks a backlog's
batches until per-batch costs dominate. :class:`Batcher` hands a batch over as
soon as it holds ``max_`` events, or its newest event was the partition's last
one at the broker when fetched (caught up), or its oldest has waited
``max_wait_s``.

:class:`DirectIntake` fills it from the fetch loop, past Faust's conductor,
channel queue and stream (three tasks per record), doing to each record what
that path does: a record fetched before a rebalance is dropped unacknowledged
(the seek to the committed offsets fetches it again); a record taken is
tracked as unacknowledged, seen by the ``on_message_in`` sensors and given one
reference, which the agent's ``stream.ack`` releases once its outputs are
delivered. A full batcher holds the fetch loop back; a busy agent finds its
next batch ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import faust
from faust.types import EventT, StreamT
from recstream.stream.metrics import WorkerMetrics

#: ``behind(message)``: is there more in the message's partition than has been fetched?
Behind = Callable[[Any], bool]


def behind_highwater(highwater: Callable[[Any], int | None]) -> Behind:
    """``behind`` from the consumer's last known end offset per partition (None: unknown);
    asked only near an end seen before (an end offset only grows)."""
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
    """The batch being filled, and the rules for handing it over (module docstring)."""

    def __init__(self, max_: int, max_wait_s: float, behind: Behind) -> None:
        if max_ < 1 or max_wait_s <= 0:
            raise ValueError(f"need max_ >= 1 and max_wait_s > 0, got {max_}, {max_wait_s}")
        self.max = max_
        self.max_wait_s = max_wait_s
        self._behind = behind
        self._buffer: list[EventT] = []
        self._first_at = 0.0  # arrival time of _buffer[0]
        self.ready = asyncio.Event()  # a batch may go: full, or caught up
        self.room = asyncio.Event()  # the buffer has room again
        self.room.set()

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, event: EventT) -> asyncio.Event | None:
        """Buffer ``event``. The buffer is full when this returns an event: wait
        for it before adding more (None: go on)."""
        buffer = self._buffer
        if not buffer:
            self._first_at = time.monotonic()
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
        return self.max_wait_s - (time.monotonic() - self._first_at)

    def due(self) -> bool:
        """Whether a batch should go now: full, caught up, or its window is over."""
        return bool(self._buffer) and (self.ready.is_set() or self.wait_s() <= 0)

    def take(self) -> list[EventT]:
        """Hand over up to ``max_`` events, oldest first."""
        buffer = self._buffer
        batch = buffer[: self.max]
        del buffer[: self.max]
        self.ready.clear()
        if buffer:  # over max: a rebalance freed the fetch loop from waiting for room
            self._first_at = time.monotonic()
            if len(buffer) >= self.max:
                self.ready.set()
                return batch
        self.room.set()
        return batch


class DirectIntake:
    """Takes the records of ``topics`` from the fetch loop into ``batcher``."""

    def __init__(
        self, app: faust.App, batcher: Batcher, topics: Iterable[str], metrics: WorkerMetrics
    ) -> None:
        self.app, self.batcher, self.topics = app, batcher, frozenset(topics)
        self._metrics = metrics
        self._parts: tuple[Any, ...] | None = None  # the app's parts, looked up once

    def offer(self, message: Any) -> Awaitable[Any] | None:
        """Take ``message``; an awaitable means the batcher is full: await it
        before the next record (None: go on)."""
        app = self.app
        if self._parts is None:
            self._parts = (app.flow_control.is_active, app.consumer.unacked.add,
                           app.sensors.on_message_in, app.monitor.stream_inbound_time,
                           app.conf.Event)  # fmt: skip
        flow_active, track, on_message_in, inbound_time, event_cls = self._parts
        if not flow_active() or message.generation_id != app.consumer_generation_id:
            self._metrics.stale_records.inc()
            return None
        tp = message.tp
        if not message.tracked:
            message.tracked = True
            track(message)
            on_message_in(tp, message.offset, message)
        inbound_time[tp] = time.monotonic()
        message.incref()
        event = event_cls(app, message.key, message.value, message.headers, message)
        full = self.batcher.add(event)
        return None if full is None else full.wait()


async def adaptive_take(stream: StreamT, batcher: Batcher) -> AsyncIterator[list[EventT]]:
    """Yield the batches of ``batcher`` until ``stream`` (the agent's) stops; never acks."""
    while not stream.should_stop:
        if not batcher.due():
            # Empty: wait for a first event that is a batch by itself (or the
            # window, then look again); else: for the oldest event's deadline.
            left = batcher.wait_s()
            if left > 0:
                await stream.wait_for_stopped(batcher.ready, timeout=left)
            if not batcher.due():
                continue
        yield batcher.take()
