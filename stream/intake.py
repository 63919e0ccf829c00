"""The events topics' records, from the fetch loop straight into the agent's batcher.

Faust passes each record through the conductor, a channel queue and the
agent's stream (three tasks per record). :class:`DirectIntake` does what that
path does to a record, in the fetch loop (stream.faust_internals):

* a record fetched before a rebalance (flow suspended, or an older consumer
  generation) is dropped unacknowledged; the seek to the committed offsets
  after the rebalance fetches it again;
* the record is tracked as unacknowledged (a commit never passes it, a
  rebalance waits for it), the ``on_message_in`` sensors see it, and it gets
  one reference, which the agent's ``stream.ack`` releases after delivery;
* it goes into the :class:`stream.take.Batcher` as a :class:`faust.Event`.

Faust's per-event stream sensors are not called for these records; its stall
check still sees the partition's inbound time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from time import monotonic
from typing import Any

import faust
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.take import Batcher


class DirectIntake:
    """Takes the records of ``topics`` from the fetch loop into ``batcher``."""

    def __init__(
        self, app: faust.App, batcher: Batcher, topics: Iterable[str], metrics: WorkerMetrics
    ) -> None:
        self.app = app
        self.batcher = batcher
        self.topics = frozenset(topics)
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
        inbound_time[tp] = monotonic()
        message.incref()
        event = event_cls(app, message.key, message.value, message.headers, message)
        full = self.batcher.add(event)
        return None if full is None else full.wait()
