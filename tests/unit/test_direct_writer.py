"""DirectWriter on a RocksDB table in a temp folder: changelog records queued in
store-write order and sent per partition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP
from recstream.stream.batched_send import Delivered
from recstream.stream.faust_internals import table_partition
from recstream.stream.tables import DirectWriter, define_table

TOPIC = "dw-test-t-changelog"


class Store:
    """What the tests read back: the table's RocksDB store, by partition."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: bytes, partition: int) -> bytes | None:
        with table_partition(record(partition)):
            value: bytes | None = self._table.data[key] if key in self._table.data else None
        return value

    def persisted(self, partition: int) -> int | None:
        offset: int | None = self._table.data.persisted_offset(TP(TOPIC, partition))
        return offset


@dataclass
class Sends:
    """A broker stand-in: records what each send_records call got, in call order."""

    calls: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = field(
        default_factory=list
    )
    held: list[asyncio.Future[Delivered | None]] = field(default_factory=list)
    fail: Exception | None = None

    async def send_records(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Awaitable[Delivered | None]:
        if self.fail is not None:
            raise self.fail
        self.calls.append((topic, partition, list(records)))
        done: asyncio.Future[Delivered | None] = asyncio.get_running_loop().create_future()
        self.held.append(done)
        return done


class _Record(SimpleNamespace):
    pass  # (weak references to it are allowed, as table_partition needs)


def record(partition: int) -> Any:
    return _Record(message=SimpleNamespace(partition=partition))


@pytest.fixture()
def writer(tmp_path: Path) -> Any:
    def make(sends: Sends) -> tuple[DirectWriter, Store]:
        app = faust.App("dw-test", broker="kafka://127.0.0.1:1", store="rocksdb://",
                        datadir=str(tmp_path), autodiscover=False)  # fmt: skip
        table = define_table(app, "t", 4, memory_mb=8)
        assert table.changelog_topic.get_topic_name() == TOPIC
        # Each partition's RocksDB opens within the table's memory: 2 x 2 MiB memtables,
        # a 4 MiB block cache (Faust's defaults: 3 x 64 MiB and 2 GiB).
        opts = table.data.rocksdb_options
        mib = 1024 * 1024
        assert (opts.write_buffer_size, opts.max_write_buffer_number,
                opts.block_cache_size) == (2 * mib, 2, 4 * mib)  # fmt: skip
        return DirectWriter(table, sends.send_records), Store(table)

    return make


def test_writes_are_sent_at_flush_one_call_per_partition_in_write_order(writer: Any) -> None:
    async def go() -> None:
        sends = Sends()
        w, store = writer(sends)
        async with w.lock:
            a = w.put(b"ann", b"1", record(0))
            b = w.put(b"bob", b"2", record(1))
            a2 = w.put(b"ann", b"3", record(0))
            assert sends.calls == []  # queued, not sent
            # The store is written at once, each key in its record's partition only.
            assert store.get(b"ann", 0) == b"3" and store.get(b"bob", 1) == b"2"
            assert store.get(b"ann", 1) is None and store.get(b"bob", 0) is None
            await w.flush()
        assert sends.calls == [
            (TOPIC, 0, [(b"ann", b"1"), (b"ann", b"3")]),
            (TOPIC, 1, [(b"bob", b"2")]),
        ]
        assert a is a2 and a is not b  # one delivery per partition's group
        assert not a.done()
        sends.held[0].set_result(Delivered(TOPIC, 0, 41))
        await asyncio.sleep(0)
        assert a.result() == Delivered(TOPIC, 0, 41) and not b.done()
        w.persisted([a.result()])
        assert (store.persisted(0), store.persisted(1)) == (41, None)

    asyncio.run(go())


def test_a_deletion_flush_sends_the_puts_queued_before_its_tombstone_first(writer: Any) -> None:
    """The events agent's put, then a deletion of the same user before the events
    agent flushed: the changelog must read put, tombstone (a restore then forgets
    the user), and the put's delivery is the deletion flush's."""

    async def go() -> None:
        sends = Sends()
        w, store = writer(sends)
        async with w.lock:
            put = w.put(b"kim", b"state", record(2))
        async with w.lock:  # the deletions agent
            tombstone = w.delete(b"kim", record(2))
            await w.flush()
        async with w.lock:  # the events agent's flush: nothing left to send
            await w.flush()
        assert sends.calls == [(TOPIC, 2, [(b"kim", b"state"), (b"kim", None)])]
        assert put is tombstone and store.get(b"kim", 2) is None
        sends.held[0].set_result(Delivered(TOPIC, 2, 8))
        assert await put == Delivered(TOPIC, 2, 8)

    asyncio.run(go())


def test_a_failed_send_fails_the_deliveries_of_every_queued_write(writer: Any) -> None:
    async def go() -> None:
        sends = Sends(fail=ConnectionError("broker gone"))
        w, _ = writer(sends)
        async with w.lock:
            a, b = w.put(b"a", b"1", record(0)), w.put(b"b", b"2", record(1))
            with pytest.raises(ConnectionError):
                await w.flush()
        for fut in (a, b):
            with pytest.raises(ConnectionError):
                await fut

    asyncio.run(go())


def test_a_failed_delivery_reaches_the_writes(writer: Any) -> None:
    async def go() -> None:
        sends = Sends()
        w, _ = writer(sends)
        async with w.lock:
            a = w.put(b"a", b"1", record(0))
            await w.flush()
        sends.held[0].set_exception(TimeoutError("no ack"))
        with pytest.raises(TimeoutError):
            await a

    asyncio.run(go())


def test_writes_and_flushes_need_the_lock(writer: Any) -> None:
    async def go() -> None:
        w, _ = writer(Sends())
        with pytest.raises(AssertionError):
            w.put(b"a", b"1", record(0))
        with pytest.raises(AssertionError):
            await w.flush()

    asyncio.run(go())
