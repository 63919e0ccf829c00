"""The events agent: validate, update the user sequences, emit score requests.

:class:`BatchProcessor` applies a batch; the agent is the pipelined loop around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import faust
from aiokafka.partitioner import murmur2
from faust.types import AgentT, EventT, StreamT
from faust.types.tuples import Message
from recstream.schemas import Event, InvalidEvent, parse_event
from recstream.schemas.messages import now_ms
from recstream.stream import faust_internals
from recstream.stream.batched_send import Delivered, Record, send_as_batches
from recstream.stream.deadletter import dead_letter_json
from recstream.stream.last_recommendations import OnlineQuality
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import HoleWatch
from recstream.stream.sequence import (
    StateDecodeError,
    UserSequence,
    apply_events,
    decode_state,
    encode_state,
    score_request_json,
)
from recstream.stream.tables import DirectWriter, changelog_sends
from recstream.stream.take import Batcher, adaptive_take
from recstream.stream.topics import WorkerTopics

log = logging.getLogger(__name__)

FatalHandler = Callable[[BaseException], None]


class Emitter(Protocol):
    """Where the agent's output records go; each call returns a future of the delivery."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Awaitable[Any]: ...

    async def send_records(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> Awaitable[Delivered | None]:
        """Send ``records`` to one partition, in order; the future gives the last one's offset."""
        ...


class ProducerEmitter:
    """Sends through the app's own producer, which Faust flushes before it commits."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Awaitable[Any]:
        return await self._app.producer.send(topic, key, value, partition, None, None)

    async def send_records(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> Awaitable[Delivered | None]:
        # Past Faust's send() (and its on_produce_message signal, unused here).
        producer = faust_internals.aiokafka_producer(self._app)
        return await send_as_batches(producer, topic, partition, records)


def user_partition(user_key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for a user id key."""
    return (murmur2(user_key) & 0x7FFFFFFF) % partitions


class BatchProcessor:
    """Applies one batch of events. Bad input never raises; it goes to the DLQ."""

    def __init__(
        self, *, emitter: Emitter, metrics: WorkerMetrics, topics: WorkerTopics, max_len: int,
        partitions: int, observer: OnlineQuality, holes: HoleWatch, writer: DirectWriter,
    ) -> None:  # fmt: skip
        self._writer = writer  # the table's one writer, shared with the deletions agent
        self._observer = observer
        self._emitter = emitter
        self._metrics = metrics
        self._topics = topics
        self._max_len = max_len
        self._partitions = partitions
        self._holes = holes

    async def apply(self, batch: Sequence[EventT]) -> Awaitable[None]:
        """Apply a batch and send its outputs; return their delivery, which must be
        done before the batch is acknowledged (the next may be applied meanwhile)."""
        started = time.perf_counter()
        ingest_ms = now_ms()
        metrics = self._metrics
        metrics.events_in.inc(len(batch))
        metrics.batch_size.observe(len(batch))
        pending: list[Awaitable[Any]] = []
        groups = await self._group(batch, ingest_ms, pending)
        # Deliveries of this batch's changelog records, one per changelog partition.
        changelog: set[Awaitable[Any]] = set()
        applied = duplicates = requests = 0
        # Score requests by partition, sent as one producer batch each.
        outbox: dict[int, list[Record]] = {}
        # The observer's last_recommendations writes are outputs of the batch too.
        with changelog_sends() as sends:
            for (_, user_key), pairs in groups.items():
                n_applied, n_duplicates, output = await self._apply_user(
                    user_key, pairs, ingest_ms, changelog, outbox
                )
                pending.extend(output)
                applied += n_applied
                duplicates += n_duplicates
                requests += n_applied + n_duplicates > 0  # 0 and 0: all went to the DLQ
        pending.extend(sends)
        # The score requests first: they are on the path to a recommendation.
        for partition, records in outbox.items():
            send = self._emitter.send_records(self._topics.score_requests, partition, records)
            pending.append(await send)
        if changelog:  # (a deletion in between may have flushed them already)
            async with self._writer.lock:
                await self._writer.flush()
        # Counted once per batch: a Prometheus counter takes a lock per inc().
        if requests:
            metrics.applied.inc(applied)
            metrics.duplicates.inc(duplicates)
            metrics.score_requests.inc(requests)
        return self._delivery(list(changelog), pending, started)

    async def _group(
        self, batch: Sequence[EventT], ingest_ms: int, pending: list[Awaitable[Any]]
    ) -> dict[tuple[int, bytes], list[tuple[Event, EventT]]]:
        """The batch's valid events by (source partition, user key), in arrival order;
        dead letters and rerouted events go out here (their deliveries to ``pending``)."""
        metrics = self._metrics
        groups: dict[tuple[int, bytes], list[tuple[Event, EventT]]] = {}
        for record in batch:
            message = record.message
            repeat = self._holes.check(message)
            if not isinstance(repeat, bool):
                repeat = await repeat
            try:
                event = parse_event(message.value, now=ingest_ms)
            except InvalidEvent as exc:
                if repeat:  # its letter went out when it was handled
                    metrics.dlq_repeats.inc()
                    continue
                pending.append(await self._dead_letter(message, exc.reason, exc.detail, ingest_ms))
                continue
            user_key = event.user_id.encode()
            if message.key != user_key:
                target = user_partition(user_key, self._partitions)
                if target != message.partition:
                    # Keyless or wrongly keyed, on another user's partition: to the
                    # user's partition, where its table entry lives (as group_by).
                    metrics.repartitioned.inc()
                    send = self._emitter.send(self._topics.repartition, user_key, message.value,
                                              target)  # fmt: skip
                    pending.append(await send)
                    continue
            group = groups.get((message.partition, user_key))
            if group is None:
                groups[message.partition, user_key] = [(event, record)]
            else:
                group.append((event, record))
        return groups

    async def _delivery(
        self, changelog: list[Awaitable[Any]], pending: list[Awaitable[Any]], started: float
    ) -> None:
        # A failure raises to the agent, which stops the worker without acknowledging.
        if changelog or pending:
            delivered = await asyncio.gather(*changelog, *pending)
            self._writer.persisted(delivered[: len(changelog)])
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _apply_user(
        self, user_key: bytes, pairs: list[tuple[Event, EventT]], ingest_ms: int,
        changelog: set[Awaitable[Any]], outbox: dict[int, list[Record]],
    ) -> tuple[int, int, list[Awaitable[Any]]]:  # fmt: skip
        """Apply one user's events of the batch; queue its score request in
        ``outbox``; return (applied, duplicates, dead letters)."""
        events = [event for event, _ in pairs]
        record = pairs[-1][1]  # any record of the group: they share the partition
        # Table errors are not caught: they are the worker's, not the events', problem.
        async with self._writer.lock:
            with faust_internals.table_partition(record):
                state = self._load(events[0].user_id, self._writer.get(user_key, record))
                try:
                    new_state, applied = apply_events(state, events, self._max_len)
                    value = encode_state(new_state)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop every user's stream
                    failure: Exception | None = exc
                else:
                    failure = None
                    # Written even when nothing was applied: after a crash between
                    # the RocksDB write and the changelog delivery, this rewrite of
                    # the redelivered (now duplicate) events restores the changelog.
                    changelog.add(self._writer.put(user_key, value, record))
                    if applied:
                        self._observer.on_applied(user_key, applied)
        if failure is not None:
            log.error("failed to apply %d events of user %r", len(pairs), events[0].user_id,
                      exc_info=failure)  # fmt: skip
            detail = f"{type(failure).__name__}: {failure}"[:300]
            return 0, 0, [await self._dead_letter(r.message, "processing_error", detail, ingest_ms)
                          for _, r in pairs]  # fmt: skip
        # One request per user per batch, sent again for a redelivery (the first
        # may have been lost in the crash), on the user's partition.
        request = score_request_json(new_state, applied[-1] if applied else events[-1], ingest_ms)
        partition = user_partition(user_key, self._partitions)
        outbox.setdefault(partition, []).append((user_key, request))
        return len(applied), len(events) - len(applied), []

    def _load(self, user_id: str, raw: bytes | None) -> UserSequence | None:
        if raw is None:
            return None
        try:
            return decode_state(raw)
        except StateDecodeError as exc:
            # Starting the user over beats stopping every user's stream.
            self._metrics.state_errors.inc()
            log.error("user %r: unreadable stored state, starting over: %s", user_id, exc)
            return None

    async def _dead_letter(self, message: Message, reason: str, detail: str, now: int) -> Any:
        self._metrics.dlq.labels(reason).inc()
        letter = dead_letter_json(message, reason, detail, now)
        return await self._emitter.send(self._topics.dlq, message.key, letter)


def define_agent(
    app: faust.App, topics: WorkerTopics, processor: BatchProcessor, *, batcher: Batcher,
    on_fatal: FatalHandler,
) -> AgentT:  # fmt: skip
    """The events agent: applies the batches of ``batcher``, which the fetch loop
    fills (stream.take.DirectIntake); its stream only acknowledges."""

    async def process_events(stream: StreamT) -> None:
        # Pipelined, at-least-once: a batch is acknowledged only after all its
        # outputs (score requests, dead letters, changelog records) are
        # delivered, but the next batch is applied while they are in flight.
        # At most one batch's deliveries are outstanding: the table writes of
        # batch N+1 follow N's in the producer's queue, partition by partition.
        in_flight: asyncio.Future[None] | None = None
        try:
            async for batch in adaptive_take(stream, batcher):
                try:
                    delivery = await processor.apply(batch)
                    if in_flight is not None:
                        # Shielded: a stop while waiting must not cancel the
                        # previous batch's deliveries and acks (see finally).
                        await asyncio.shield(in_flight)
                    in_flight = asyncio.ensure_future(_deliver_then_ack(stream, batch, delivery))
                except Exception as exc:
                    # Stop right here: nothing of this batch is acknowledged.
                    on_fatal(exc)
                    raise
        finally:
            if in_flight is not None and not in_flight.done():
                # Stopping (a rebalance waits for acks; a shutdown cancels):
                # let the last batch finish its deliveries and acks.
                try:
                    await in_flight
                except Exception as exc:
                    on_fatal(exc)
                    raise

    async def _deliver_then_ack(
        stream: StreamT, batch: Sequence[EventT], delivery: Awaitable[None]
    ) -> None:
        try:
            await delivery
        except Exception as exc:
            on_fatal(exc)  # never acknowledge a batch whose outputs were not delivered
            raise
        for event in batch:
            await stream.ack(event)

    return app.agent(topics.source, name="recstream.process_events")(process_events)
