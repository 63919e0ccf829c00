"""The embedded broker's CPU per fetch grows with the batches stored in the partition.

``python -m bench.broker_fetch_cost --json out/bfc.json`` starts a fresh embedded
broker (Tansu), stores ``--batches`` single-record batches in one topic, and
then measures the broker's CPU while a producer trickles 200 records/s and a
consumer reads them at the tail, for four cases:

* produce only, to the big topic;
* an idle consumer at the big topic's tail (its fetches return nothing);
* produce and consume on a small topic (the baseline, same run);
* produce and consume on the big topic.

Measured on the 2-core dev machine (20,000 batches): 4.8%, 4.1%, 11.2% and 66.4% of a
core. Only fetches that return records cost in proportion to the stored batches,
so a stream that runs at a fixed rate slows down as its topics grow: the
latency phase of ``recstream bench stream`` shows it (``latency_by_interval_ms``).
Real Kafka finds a fetch position through its offset index.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench.jsonio import write_json_atomic
from bench.stream_io import cpu_pct, cpu_seconds
from recstream.broker import EmbeddedBroker

BIG, SMALL = "fetch-cost-big", "fetch-cost-small"
PAYLOAD = b"x" * 300
TRICKLE = 800  # records, 5 ms apart
CONSUME_S = 4.0


async def _trickle(producer: AIOKafkaProducer, topic: str) -> None:
    for i in range(TRICKLE):
        await producer.send(topic, PAYLOAD, key=str(i).encode())
        await asyncio.sleep(0.005)


async def _consume(bootstrap: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=20,
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=300)
        end = time.monotonic() + CONSUME_S
        while time.monotonic() < end:
            await consumer.getmany(timeout_ms=100)
    finally:
        await consumer.stop()


async def _broker_cpu_during(pid: int, work: Awaitable[Any]) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await work
    pct = cpu_pct(before, cpu_seconds(pid), time.monotonic() - started)
    if pct is None:
        raise RuntimeError("cannot read the broker's CPU time from /proc")
    return pct


async def _measure(bootstrap: str, pid: int, batches: int) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=False)
    await producer.start()
    try:
        for i in range(batches):  # one awaited send = one stored batch
            await (await producer.send(BIG, PAYLOAD, key=str(i).encode()))
        return {
            "produce_only_big": await _broker_cpu_during(pid, _trickle(producer, BIG)),
            "idle_consumer_big": await _broker_cpu_during(pid, _consume(bootstrap, BIG)),
            "produce_consume_small": await _broker_cpu_during(
                pid, asyncio.gather(_trickle(producer, SMALL), _consume(bootstrap, SMALL))
            ),
            "produce_consume_big": await _broker_cpu_during(
                pid, asyncio.gather(_trickle(producer, BIG), _consume(bootstrap, BIG))
            ),
        }
    finally:
        await producer.stop()


def run(batches: int) -> dict[str, Any]:
    with EmbeddedBroker(partitions=4) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic(BIG, 4, 1), NewTopic(SMALL, 4, 1)])
        finally:
            admin.close()
        assert broker.proc is not None
        cpu = asyncio.run(_measure(broker.bootstrap, broker.proc.pid, batches))
    return {
        "stored_batches": batches,
        "broker_cpu_pct": cpu,
        "big_over_small": round(cpu["produce_consume_big"] / max(cpu["produce_consume_small"], 0.1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = run(args.batches)
    print(f"{'case (200 records/s)':<28} broker CPU, % of a core")
    for case, pct in report["broker_cpu_pct"].items():
        print(f"{case:<28} {pct:>6}")
    print(f"consume big / small: {report['big_over_small']}x ({args.batches:,} batches stored)")
    if args.json:
        write_json_atomic(args.json, report)


if __name__ == "__main__":
    main()
