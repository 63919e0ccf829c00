"""The ``user_sequences`` table and how batched code writes to the right partition of it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import faust
from faust.streams import _current_event  # see table_partition() for why
from faust.types import TP, EventT, TableT
from faust.types.tuples import FutureMessage
from recstream.stream.batched_send import Delivered, Record

USER_SEQUENCES = "user_sequences"


#: The changelog sends of the table writes made in the current task (see changelog_sends).
_sends: ContextVar[list[FutureMessage] | None] = ContextVar(
    "recstream_changelog_sends", default=None
)


class DeliveredTable(faust.Table):  # type: ignore[misc]  # faust's classes are untyped
    """A Faust table whose changelog sends can be awaited by the code that wrote.

    Faust hands changelog records to a producer buffer and forgets them; before
    committing source offsets it calls ``producer.flush()``, whose buffer part
    gives up after 0.1 s without a send (``ProducerBuffer.flush_atmost``). On a
    busy machine a commit can therefore cover events whose changelog records
    are still in that buffer; a worker that dies or leaves then loses them,
    and the partition's next owner restores a state without those events and
    never sees them again. (Not the cause of issue #7's takeover bug, which was
    records dropped by the consumer: see stream.offset_gaps; a gap of the same
    kind.) Awaiting the sends before a batch is acknowledged closes it: an
    acknowledged event's table update is durable in the changelog.
    ``user_sequences`` bypasses this (stream.tables.DirectWriter awaits its own
    sends); ``last_recommendations`` and the deletions' tombstones use it.
    """

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        sends = _sends.get()
        if sends is not None:
            sends.append(fut)
        return fut


@contextmanager
def changelog_sends() -> Iterator[list[FutureMessage]]:
    """Collect the changelog sends of :class:`DeliveredTable` writes made in the block.

    Per task (a context variable): the worker's agents run concurrently and
    each must wait for its own writes only.
    """
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


def define_table(app: faust.App, partitions: int) -> TableT:
    """User id (utf-8 bytes) -> encoded :class:`stream.sequence.UserSequence`."""
    return app.Table(
        USER_SEQUENCES,
        # bytes means Faust's "raw" codec both ways: the value is our own
        # compact codec, and a raw key is the same bytes as the ``events``
        # record key.
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        options={"driver": "rocksdict"},
    )


def read_value(table: TableT, key: bytes) -> bytes | None:
    """``table.get(key)`` with one store lookup, under :func:`table_partition`.

    ``Table.get`` asks the store whether the key exists and then reads it (two
    RocksDB reads for every known user) and tells every sensor about the read;
    reading the store itself gives the same value for half the work. Writes
    must reach the changelog: through the table, or a :class:`DirectWriter`
    (whose :meth:`DirectWriter.get` is faster still).
    """
    value: bytes | None = table.data.get(key)
    return value


def _rocksdb_store(table: TableT) -> Any | None:
    """Faust's RocksDB store of ``table``, or None for another store (``memory://``).

    Faust's ``store[key]`` runs the key and value through the table's codecs
    (raw bytes here: no change), looks up the current event for its
    partition, and then reads or writes that partition's database; at 30k
    events/s those layers were ~8% of the worker (py-spy), around a RocksDB
    call of a fraction of it. With the partition known the same read or write
    is one call; the store's key index (which partition holds a key, for
    lookups without an event) is kept as Faust keeps it. Private Faust API
    (faust-streaming is pinned below 0.16); a store without it takes Faust's
    path.
    """
    store = table.data
    if hasattr(store, "_db_for_partition") and hasattr(store, "_key_index"):
        return store
    return None


@contextmanager
def table_partition(event: EventT) -> Iterator[None]:
    """Make table reads and writes inside the block go to ``event``'s partition.

    A Faust table keeps each key in the store partition, and sends its changelog
    record to the partition, of the *current event* (a context variable that
    the stream sets while iterating). ``stream.take_events()`` fills its buffer
    in a background task, so inside the agent the current event is unset and a
    write raises "Cannot modify table key from outside of stream iteration"
    (faust-streaming issue #497). A batch also mixes partitions, so "the last
    event" would be wrong anyway. The agent therefore groups a batch by source
    partition and writes each group under one of that group's events.
    ``_current_event`` is private; faust-streaming is pinned below 0.16 and the
    functional tests exercise this path.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


_UNRESOLVED = object()

#: ``Emitter.send_records`` (stream.agents): ``await send(topic, partition, records)``
#: gives the future of their delivery (the last record's :class:`Delivered`, or None).
SendRecords = Callable[[str, int, Sequence[Record]], Awaitable[Awaitable["Delivered | None"]]]


class DirectWriter:
    """Writes to one table without Faust's per-record changelog machinery.

    A Faust table write puts the value into the store and queues its
    changelog record in the producer buffer, which a background task sends
    one record at a time, with a callback per record that writes the
    changelog offset into RocksDB. In the worker that was ~9% of the py-spy
    samples (200k-event bench), and more than 100 queued records stalled the
    consumer ("producer buffer full"). Here a write puts the value into the
    store and queues the changelog record (raw key and value, the partition
    of the current record, as Faust sends it) with the writer; :meth:`flush`
    sends what is queued as one producer batch per partition. The caller
    awaits the future a write returned, with the batch's other outputs,
    before the batch is acknowledged, and then records the newest offset per
    partition once (:meth:`persisted`).

    Every write, delete and flush of the table must go through one instance,
    inside ``async with writer.lock``, a write together with the read its
    value came from: without the lock another agent could change the key in
    between (a deletion, then a write of the state read before it). Queued
    records keep the order of the store writes whoever flushes them: a
    deletion's flush also sends the events agent's puts queued before its
    tombstone, and their futures are settled by that flush.
    """

    def __init__(self, table: TableT, send_records: SendRecords) -> None:
        self._table = table
        self._send_records = send_records
        self._topic = table.changelog_topic.get_topic_name()
        self.lock = asyncio.Lock()
        # Faust's RocksDB store, found at the first read or write (Faust creates
        # the table's store lazily); None: another store, written through Faust.
        self._rocks: Any = _UNRESOLVED
        # Changelog partition -> (records queued since the last flush, their delivery).
        self._queued: dict[int, tuple[list[Record], asyncio.Future[Delivered | None]]] = {}

    def _store(self) -> Any | None:
        if self._rocks is _UNRESOLVED:
            self._rocks = _rocksdb_store(self._table)
        return self._rocks

    def get(self, key: bytes, record: EventT) -> bytes | None:
        """:func:`read_value` of ``key`` in ``record``'s partition, under
        ``table_partition(record)``; one RocksDB call on Faust's RocksDB store."""
        assert self.lock.locked(), "hold writer.lock around the read and the write"
        store = self._store()
        if store is None:
            return read_value(self._table, key)
        partition = record.message.partition
        value: bytes | None = store._db_for_partition(partition).get(key)
        if value is not None:  # as Faust's store does
            store._key_index[key] = partition
        return value

    def put(self, key: bytes, value: bytes, record: EventT) -> asyncio.Future[Delivered | None]:
        """``table[key] = value`` and queue its changelog record; returns the
        delivery of the record's partition at the next :meth:`flush`."""
        assert self.lock.locked(), "hold writer.lock around the read and the write"
        partition = record.message.partition
        store = self._store()
        if store is not None:  # what Faust's store[key] = value does, in one call
            store._key_index[key] = partition
            store._db_for_partition(partition).put(key, value)
        else:
            self._table.data[key] = value
        return self._queue(key, value, partition)

    def delete(self, key: bytes, record: EventT) -> asyncio.Future[Delivered | None]:
        """``del table[key]`` (absent is fine) and queue its tombstone; as :meth:`put`.

        The tombstone is sent even when the key is absent: a redelivered
        deletion then repairs a crash between the local delete and the send.
        """
        assert self.lock.locked(), "hold writer.lock around the delete"
        try:
            del self._table.data[key]
        except KeyError:
            pass  # the memory store raises for an absent key; RocksDB does not
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
        """Record the newest delivered offset per changelog partition in the store.

        Recovery replays the changelog from there on (Faust does this per record).
        """
        newest: dict[int, int] = {}
        for metadata in delivered:
            if metadata is None:  # an emitter that reports no offsets (tests)
                continue
            if metadata.offset > newest.get(metadata.partition, -1):
                newest[metadata.partition] = metadata.offset
        store = self._table.data
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
