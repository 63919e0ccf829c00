"""How many record batches the broker holds per topic: what the embedded broker's
fetch cost grows with (``bench/broker_fetch_cost.py``).

``recstream bench stream`` reports it at the end of its latency phase, so that
a p99 that climbs over the replay can be set against the batches each hot
topic accumulated and who wrote them (the load generator writes ``events``,
the worker ``score-requests``, the scorer ``recommendations``).

Kafka clients do not show batch boundaries, so this reads each topic from the
start with aiokafka and counts the batches its fetcher unpacks. That hooks a
private class of aiokafka's (``consumer.fetcher.PartitionRecords``): when a
new aiokafka moves it, :func:`stored_batches` returns ``None`` instead of
failing the benchmark. The hook is process-wide while the count runs, so no
other consumer of the process may be fetching then.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer
from recstream.bench.stream_io import topic_partitions

log = logging.getLogger(__name__)


class _CountingRecords:
    """Stands in for a fetch's record set and counts the batches taken from it."""

    def __init__(self, records: Any, counts: collections.Counter[str], topic: str) -> None:
        self._records, self._counts, self._topic = records, counts, topic

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        self._counts[self._topic] += 1
        return self._records.next_batch()


@contextmanager
def _counting(counts: collections.Counter[str]) -> Iterator[bool]:
    """Count every batch aiokafka's fetcher unpacks in the block; yields False
    (and counts nothing) when the fetcher no longer looks as expected."""
    try:
        from aiokafka.consumer import fetcher

        cls = fetcher.PartitionRecords
        original = cls._unpack_records
    except (ImportError, AttributeError):
        yield False
        return

    def unpack(self: Any) -> Any:
        self._records = _CountingRecords(self._records, counts, self._tp.topic)
        return original(self)

    cls._unpack_records = unpack
    try:
        yield True
    finally:
        cls._unpack_records = original


async def stored_batches(
    bootstrap: str, topics: Sequence[str], timeout_s: float = 60.0
) -> dict[str, dict[str, int]] | None:
    """``{topic: {"records": n, "batches": m, "partitions": k}}`` over every partition of ``topics``,
    read from the start to the end offsets of now; ``None`` if batches cannot be
    counted with this aiokafka or the read did not finish in ``timeout_s``."""
    counts: collections.Counter[str] = collections.Counter()
    records: collections.Counter[str] = collections.Counter()
    partitions: collections.Counter[str] = collections.Counter()
    with _counting(counts) as ok:
        if not ok:
            log.warning("cannot count batches with this aiokafka; not reported")
            return None
        # Counting from before the start: the fetcher prefetches in the background.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )  # fmt: skip
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, topics)
            if not tps:
                return {}
            partitions.update(tp.topic for tp in tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                if time.monotonic() > deadline:
                    log.warning("stored batches: read not done in %.0fs; not reported", timeout_s)
                    return None
                fetched = await consumer.getmany(timeout_ms=200, max_records=100_000)
                for tp, batch in fetched.items():
                    records[tp.topic] += len(batch)
        finally:
            await consumer.stop()
    return {
        t: {"records": records[t], "batches": counts[t], "partitions": partitions[t]}
        for t in topics
    }


def count(bootstrap: str, topics: Sequence[str]) -> dict[str, dict[str, int]] | None:
    """:func:`stored_batches` from synchronous code (its own event loop)."""
    return asyncio.run(stored_batches(bootstrap, topics))
