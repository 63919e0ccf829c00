"""The worker's tables, and writes whose changelog records the writer can await."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import faust
from faust.types import TP, EventT, TableT
from faust.types.tuples import FutureMessage
from recstream.stream import faust_internals
from recstream.stream.batched_send import Delivered, Record

USER_SEQUENCES = "user_sequences"

#: The changelog sends of the table writes made in the current task (see changelog_sends).
_sends: ContextVar[list[FutureMessage] | None] = ContextVar(
    "recstream_changelog_sends", default=None
)


class DeliveredTable(faust.Table):  # type: ignore[misc]  # faust's classes are untyped
    """A Faust table whose changelog sends the writing code can await: Faust gives up
    flushing them 0.1 s into a commit, which could then cover updates that never
    reached the changelog. (``user_sequences`` is written by a DirectWriter.)"""

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        sends = _sends.get()
        if sends is not None:
            sends.append(fut)
        return fut


@contextmanager
def changelog_sends() -> Iterator[list[FutureMessage]]:
    """Collect the changelog sends of :class:`DeliveredTable` writes made in the block
    by this task (a context variable: the agents run concurrently)."""
    sends: list[FutureMessage] = []
    token = _sends.set(sends)
    try:
        yield sends
    finally:
        _sends.reset(token)


async def delivered(sends: list[FutureMessage]) -> None:
    """Wait until every collected changelog record is stored by the broker (or raise)."""
    if sends:
        await asyncio.gather(*sends)


def rocksdb_options(memory_mb: int) -> dict[str, object]:
    """Faust's RocksDB options for one table partition within ``memory_mb`` MiB: two
    memtables of a quarter each and a block cache of half. Faust's own defaults
    (three 64 MiB memtables and a 2 GiB cache per partition) let a worker's RSS grow
    for as long as it writes: 47 MB/min in a 10-minute soak at 1,000 events/s
    (bench/RESULTS.md)."""
    mib = 1024 * 1024
    return {"driver": "rocksdict", "write_buffer_size": memory_mb * mib // 4,
            "max_write_buffer_number": 2, "block_cache_size": memory_mb * mib // 2}


def define_table(app: faust.App, name: str, partitions: int, memory_mb: int) -> TableT:
    """A RocksDB table of raw bytes keyed by user id (utf-8), as the record keys are;
    each partition's RocksDB within ``memory_mb`` MiB (:func:`rocksdb_options`)."""
    return app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions,
                     options=rocksdb_options(memory_mb))  # fmt: skip


def read_value(table: TableT, key: bytes) -> bytes | None:
    """``table.get(key)`` in one store lookup instead of two; call under ``table_partition``."""
    value: bytes | None = table.data.get(key)
    return value


#: ``Emitter.send_records`` (stream.agents): awaited, the future of the records' delivery.
SendRecords = Callable[[str, int, Sequence[Record]], Awaitable[Awaitable["Delivered | None"]]]


class DirectWriter:
    """Writes one RocksDB table without Faust's per-record changelog machinery.

    A write goes to the record partition's database and queues its changelog
    record; :meth:`flush` sends the queue as one producer batch per partition, in
    store-write order whoever flushes. The caller awaits a write's future before
    acknowledging, then records the newest offsets (:meth:`persisted`). Every
    read-then-write, delete and flush goes through one instance, under ``lock``.
    """

    def __init__(self, table: TableT, send_records: SendRecords) -> None:
        self._table = table
        self._send_records = send_records
        self._topic = table.changelog_topic.get_topic_name()
        self.lock = asyncio.Lock()
        self._store: Any = None  # Faust creates it lazily: looked up at the first use
        # Changelog partition -> (records queued since the last flush, their delivery).
        self._queued: dict[int, tuple[list[Record], asyncio.Future[Delivered | None]]] = {}

    def _rocksdb(self) -> Any:
        if self._store is None:  # (a store is a Mapping: no truth test)
            self._store = faust_internals.rocksdb_store(self._table)
        return self._store

    def get(self, key: bytes, record: EventT) -> bytes | None:
        """The value of ``key`` in ``record``'s partition."""
        assert self.lock.locked(), "hold writer.lock around the read and the write"
        return faust_internals.store_get(self._rocksdb(), record.message.partition, key)

    def put(self, key: bytes, value: bytes, record: EventT) -> asyncio.Future[Delivered | None]:
        """``table[key] = value`` in ``record``'s partition and queue its changelog
        record; returns the delivery of that partition's records at the next flush."""
        assert self.lock.locked(), "hold writer.lock around the read and the write"
        partition = record.message.partition
        faust_internals.store_put(self._rocksdb(), partition, key, value)
        return self._queue(key, value, partition)

    def delete(self, key: bytes, record: EventT) -> asyncio.Future[Delivered | None]:
        """``del table[key]`` and queue its tombstone, even for an absent key (a
        redelivered deletion then repairs a crash between delete and send)."""
        assert self.lock.locked(), "hold writer.lock around the delete"
        del self._rocksdb()[key]
        return self._queue(key, None, record.message.partition)

    def _queue(
        self, key: bytes, value: bytes | None, partition: int
    ) -> asyncio.Future[Delivered | None]:
        queued = self._queued.get(partition)
        if queued is None:
            queued = self._queued[partition] = ([], asyncio.get_running_loop().create_future())
        queued[0].append((key, value))
        return queued[1]

    async def flush(self) -> None:
        """Send every queued changelog record, one producer batch per partition."""
        assert self.lock.locked(), "hold writer.lock around the flush"
        queued, self._queued = self._queued, {}
        items = list(queued.items())
        for i, (partition, (records, done)) in enumerate(items):
            try:
                sent = await self._send_records(self._topic, partition, records)
            except BaseException as exc:
                # The writes' futures must not wait forever: they end as the send did.
                for _, (_, left) in items[i:]:
                    if isinstance(exc, Exception):
                        left.set_exception(exc)
                    else:
                        left.cancel()
                raise
            asyncio.ensure_future(sent).add_done_callback(partial(_settle, done))

    def persisted(self, delivered: Iterable[Any]) -> None:
        """Record the newest delivered offset per changelog partition in the store,
        where recovery resumes the changelog (Faust does this per record)."""
        newest: dict[int, int] = {}
        for metadata in delivered:
            if metadata is None:  # an emitter that learns no offsets (acks=0)
                continue
            if metadata.offset > newest.get(metadata.partition, -1):
                newest[metadata.partition] = metadata.offset
        store = self._rocksdb()
        for partition, offset in newest.items():
            store.set_persisted_offset(TP(self._topic, partition), offset)


def _settle(done: asyncio.Future[Any], sent: asyncio.Future[Any]) -> None:
    """Give the writes' future the outcome of their partition's send."""
    if done.done():
        return
    if sent.cancelled():
        done.cancel()
    elif (exc := sent.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(sent.result())
