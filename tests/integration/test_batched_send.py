"""stream.batched_send against the real embedded broker: order, splitting, offsets."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from recstream.schemas.topics import SCORE_REQUESTS
from recstream.stream.batched_send import Delivered, send_as_batches

from recstream.broker import Broker

pytestmark = pytest.mark.integration


def test_records_land_in_order_across_batches_with_the_last_offset(broker: Broker) -> None:
    # 300 records of 1 KiB through 16 KiB batches: many batches, one call.
    records = [(f"k{i}".encode(), f"{i:05d}".encode() * 200) for i in range(300)]
    tp = TopicPartition(SCORE_REQUESTS, 2)

    async def go() -> tuple[list[Delivered | None], list[tuple[bytes | None, bytes | None, int]]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_batch_size=16 * 1024,
            enable_idempotence=False,
        )  # fmt: skip
        await producer.start()
        try:
            first = await (await send_as_batches(producer, tp.topic, tp.partition, records[:1]))
            rest = await (await send_as_batches(producer, tp.topic, tp.partition, records[1:]))
            tomb = await (await send_as_batches(producer, tp.topic, tp.partition, [(b"k0", None)]))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[tuple[bytes | None, bytes | None, int]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(got) < len(records) + 1 and loop.time() < deadline:
                fetched = await consumer.getmany(tp, timeout_ms=500)
                got += [(r.key, r.value, r.offset) for r in fetched.get(tp, [])]
        finally:
            await consumer.stop()
        return [first, rest, tomb], got

    delivered, got = asyncio.run(go())
    assert [(k, v) for k, v, _ in got] == [*records, (b"k0", None)]
    assert [o for _, _, o in got] == list(range(len(records) + 1))
    assert delivered == [
        Delivered(tp.topic, 2, 0),
        Delivered(tp.topic, 2, len(records) - 1),
        Delivered(tp.topic, 2, len(records)),
    ]


def test_an_unknown_partition_raises_at_the_send(broker: Broker) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await send_as_batches(producer, SCORE_REQUESTS, broker.partitions + 3, [(b"k", b"v")])
        finally:
            await producer.stop()

    with pytest.raises(ValueError, match="has no partition 7"):
        asyncio.run(go())
