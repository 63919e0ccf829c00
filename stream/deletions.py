"""The privacy path: a ``user-deletions`` record removes the user from the worker's tables.

``user-deletions`` is keyed by user with the partition count of ``events``, so
Faust's assignor brings a user's deletions to the worker holding the user's
state. Each table gets a changelog tombstone, so a restore does not bring the
user back, and the user's next event starts from an empty sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from faust.types import AgentT, EventT, StreamT, TableT
from recstream.schemas import InvalidMessage, parse_deletion
from recstream.schemas import topics as names
from recstream.schemas.messages import now_ms
from recstream.stream.agents import Emitter, FatalHandler, user_partition
from recstream.stream.deadletter import dead_letter_json
from recstream.stream.faust_internals import table_partition
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import HoleWatch
from recstream.stream.tables import DirectWriter, changelog_sends, delivered
from recstream.stream.topics import raw_topic

log = logging.getLogger(__name__)


class DeletionProcessor:
    """Applies one ``user-deletions`` record. Bad input never raises; it goes to the DLQ."""

    def __init__(
        self, *, tables: Sequence[TableT], writer: DirectWriter, emitter: Emitter,
        metrics: WorkerMetrics, dlq: str, partitions: int, holes: HoleWatch,
    ) -> None:  # fmt: skip
        # Every per-user table: Faust's (``tables``) and the one written through
        # ``writer``, which must be deleted through it too.
        self._tables = list(tables)
        self._writer = writer
        self._emitter = emitter
        self._metrics = metrics
        self._dlq = dlq
        self._partitions = partitions
        self._holes = holes

    async def process(self, record: EventT) -> None:
        message = record.message
        repeat = self._holes.check(message)
        if not isinstance(repeat, bool):
            repeat = await repeat
        try:
            deletion = parse_deletion(message.value)
        except InvalidMessage as exc:
            if repeat:  # its letter went out when it was handled
                self._metrics.dlq_repeats.inc()
                return
            await (await self._dead_letter(record, f"deletion_{exc.reason}", exc.detail))
            return
        user_key = deletion.user_id.encode()
        target = user_partition(user_key, self._partitions)
        if message.partition != target:
            # Wrongly keyed: the user's state lives on another partition (maybe
            # another worker). Send it there, keyed right, on the same topic.
            self._metrics.repartitioned.inc()
            await (await self._emitter.send(message.topic, user_key, message.value, target))
            return
        with table_partition(record), changelog_sends() as sends:
            for table in self._tables:
                # Deleted even when absent: the tombstone of a redelivered deletion
                # repairs a crash between the local delete and the changelog send.
                del table[user_key]
        # Every tombstone is durable before the deletion is acknowledged.
        await delivered(sends)
        async with self._writer.lock:
            tombstone = self._writer.delete(user_key, record)
            # Also sends the events agent's changelog records queued before it.
            await self._writer.flush()
        self._writer.persisted([await tombstone])
        self._metrics.users_deleted.inc()
        log.info("user %r deleted from %d table(s)", deletion.user_id, len(self._tables) + 1)

    async def _dead_letter(self, record: EventT, reason: str, detail: str) -> Awaitable[Any]:
        self._metrics.dlq.labels(reason).inc()
        letter = dead_letter_json(record.message, reason, detail, now_ms())
        return await self._emitter.send(self._dlq, record.message.key, letter)


def define_deletions_agent(
    app: faust.App, partitions: int, processor: DeletionProcessor, *, on_fatal: FatalHandler
) -> AgentT:
    topic = raw_topic(app, names.USER_DELETIONS, partitions=partitions)

    async def process_deletions(stream: StreamT) -> None:
        # One at a time; a record is acknowledged when the loop asks for the next.
        async for record in stream.events():
            try:
                await processor.process(record)
            except Exception as exc:
                on_fatal(exc)  # see define_agent: never acknowledge a failed record
                raise

    return app.agent(topic, name="recstream.process_deletions")(process_deletions)
