"""The events topics' records, from Faust's fetch loop straight into the agent's batch.

Faust hands each fetched record to the conductor, which builds an event and
puts it on the agent's channel queue; the agent's stream task takes it off
again, tracks it for acknowledgement, calls the sensors and its processors,
and :func:`stream.take.adaptive_take`'s processor finally buffers it. Three
tasks pass every record along, with the queue's flow control between them.
With the worker's fetch loop (:mod:`stream.faust_drain`) cheaper, that path
was the largest cost left per event (py-spy, 300k-event stream bench: the
conductor 18% and the stream 9% of the worker's busy samples), and the agent
spent three quarters of its time waiting for batches.

:class:`DirectIntake` does what that path does to a record, in the fetch loop:

* a record fetched before a rebalance (flow control suspended, or an older
  consumer generation) is dropped, as the stream would skip it; it is not
  tracked, so never acknowledged, and the seek to the committed offsets that
  ends the rebalance fetches it again (Faust's stream acknowledges such
  records, which lets a commit pass them unprocessed);
* the record is tracked as unacknowledged, with the ``on_message_in``
  sensors (the consumer waits for tracked records at a rebalance, and a
  commit never passes one), and gets one reference: the agent's
  acknowledgement after delivery (``stream.ack``) releases it;
* it becomes a :class:`faust.Event` (raw key and value: the agent reads the
  message's bytes) in the agent's :class:`stream.take.Batcher`. A full
  batcher holds the fetch loop back, as a full channel queue does, and a
  rebalance frees it from that wait.

Faust's per-event stream sensors (``on_stream_event_in/out``) are not called
for these records; the message sensors are, and the monitor's record of the
partition's last inbound event, which Faust's stall check reads.
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
        # The app's parts offer() uses, looked up at the first record rather than
        # per record (as Faust's stream does when it starts iterating).
        self._parts: tuple[Any, ...] | None = None

    def offer(self, message: Any) -> Awaitable[Any] | None:
        """Take ``message``; an awaitable means the batcher is full: await it
        before the next record (None: go on)."""
        app = self.app
        if self._parts is None:
            # app.conf.Event too: app.create_event() reads it through Faust's
            # settings registry per call (~3% of the worker at 30k events/s).
            self._parts = (app.flow_control.is_active, app.consumer.unacked.add,
                           app.sensors.on_message_in, app.monitor.stream_inbound_time,
                           app.conf.Event)
        flow_active, track, on_message_in, inbound_time, event_cls = self._parts
        if not flow_active() or message.generation_id != app.consumer_generation_id:
            self._metrics.stale_records.inc()
            return None
        tp = message.tp
        if not message.tracked:
            message.tracked = True
            track(message)
            on_message_in(tp, message.offset, message)
        # What Faust's stall check reads ("Stream has not started processing
        # TP", logged every few seconds otherwise); a full batcher stops it.
        inbound_time[tp] = monotonic()
        message.incref()
        event = event_cls(app, message.key, message.value, message.headers, message)
        full = self.batcher.add(event)
        return None if full is None else full.wait()
