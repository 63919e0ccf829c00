"""Outputs sent as one aiokafka producer batch per partition, not one ``send()`` per record.

A batch (``create_batch``/``send_batch``) has one delivery future for all its
records and keeps their order; per-record ``send()`` was the costliest part of
the worker's output path (bench/RESULTS.md, "Stream worker: the Faust bypasses").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple


class Delivered(NamedTuple):
    """Where the last record of a group was stored (what ``DirectWriter.persisted`` needs)."""

    topic: str
    partition: int
    offset: int


#: (key, value) of one record; a ``None`` value is a tombstone.
Record = tuple[bytes | None, bytes | None]


async def send_as_batches(
    producer: Any, topic: str, partition: int, records: Sequence[Record]
) -> Awaitable[Delivered | None]:
    """Queue ``records`` on an aiokafka producer, in order, as few batches as its batch
    size allows; return their delivery: the last record's offset (None where the
    producer learns no offsets, ``acks=0``), or the error of any batch."""
    if not records:
        raise ValueError("send_as_batches needs at least one record")
    sent: list[tuple[asyncio.Future[Any], int]] = []
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            # Full: the record did not go in. (An empty batch takes any record.)
            sent.append((await _send_batch(producer, batch, topic, partition), count))
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {topic} does not fit in an empty producer batch")
        count += 1
    sent.append((await _send_batch(producer, batch, topic, partition), count))
    return _last_offset(topic, partition, sent)


async def _send_batch(producer: Any, batch: Any, topic: str, partition: int) -> Any:
    try:
        return await producer.send_batch(batch, topic, partition=partition)
    except AssertionError as exc:  # aiokafka asserts an explicit partition exists
        raise ValueError(
            f"{topic} has no partition {partition}: every per-user topic must have "
            "the worker's partition count (RECSTREAM_PARTITIONS)"
        ) from exc


async def _last_offset(
    topic: str, partition: int, sent: list[tuple[asyncio.Future[Any], int]]
) -> Delivered | None:
    results = await asyncio.gather(*(future for future, _ in sent))
    metadata, count = results[-1], sent[-1][1]
    if metadata is None or metadata.offset is None or metadata.offset < 0:
        return None
    return Delivered(topic, partition, metadata.offset + count - 1)
