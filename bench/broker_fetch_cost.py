"""The embedded broker's CPU per fetch grows with the batches stored in the partition.

``python -m bench.broker_fetch_cost --json out/bfc.json`` starts a fresh embedded
broker (Tansu), stores ``--batches`` single-record batches in one topic, and
then measures the broker's CPU while a producer trickles 200 records/s and a
consumer reads them at the tail, for four cases:

* produce only, to the big topic;
* an idle consumer at the big topic's tail (its fetches return nothing);
* produce and consume on a small topic (the baseline, same run);
* produce and consume on the big topic.

Measured on the 2-core dev machine (20,000 batches): 5.9%, 4.5%, 13.9% and 89.0% of a
core (``bench/results/2026-12-03-cpu-broker-fetch-settings-3.json``). Only fetches that return records cost in proportion to the stored batches,
so a stream that runs at a fixed rate slows down as its topics grow: the
latency phase of ``recstream bench stream`` shows it (``latency_by_interval_ms``).
Real Kafka finds a fetch position through its offset index.

``--sweep`` also runs the tail read on both topics under other consumer fetch
settings (``fetch_max_wait_ms`` 5 / 20 / 50, and ``fetch_min_bytes`` 4096),
reporting the broker's CPU and the send-to-receive latency of the trickled
records, to show whether a client setting can take the cost away. Each case
appends its records to the topics, so later cases read slightly bigger ones
(800 of 20,000 batches per case by default).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from recstream.bench.jsonio import write_report
from recstream.bench.stream_io import cpu_pct, cpu_seconds
from recstream.stream.tansu_compat import TANSU_FETCH_MAX_WAIT_MS

from recstream.broker import EmbeddedBroker
from recstream.harness import percentile

BIG, SMALL = "fetch-cost-big", "fetch-cost-small"
PAYLOAD = b"x" * 300
TRICKLE = 800  # records, 5 ms apart
#: ``--sweep``: consumer settings tried on both topics (name -> AIOKafkaConsumer kwargs).
#: The first is what recstream's consumers use against Tansu; the four base cases use it too.
_WAIT = TANSU_FETCH_MAX_WAIT_MS
SWEEP: dict[str, dict[str, int]] = {
    f"wait_{_WAIT}ms": {"fetch_max_wait_ms": _WAIT},
    "wait_5ms": {"fetch_max_wait_ms": 5},
    "wait_50ms": {"fetch_max_wait_ms": 50},
    f"wait_{_WAIT}ms_min_4096b": {"fetch_max_wait_ms": _WAIT, "fetch_min_bytes": 4096},
}
RECSTREAM_FETCH = next(iter(SWEEP.values()))


async def _trickle(producer: AIOKafkaProducer, topic: str, n: int = TRICKLE) -> None:
    """``n`` records 5 ms apart, each carrying its send time (``time.time()``) before a ':'."""
    for i in range(n):
        await producer.send(topic, f"{time.time()!r}:".encode() + PAYLOAD, key=str(i).encode())
        await asyncio.sleep(0.005)


async def _broker_cpu_during(pid: int, work: Awaitable[Any]) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await work
    pct = cpu_pct(before, cpu_seconds(pid), time.monotonic() - started)
    if pct is None:
        raise RuntimeError("cannot read the broker's CPU time from /proc")
    return pct


async def _tail_read(bootstrap: str, pid: int, topic: str, producer: AIOKafkaProducer | None,
                     n: int = TRICKLE, settings: Mapping[str, int] = RECSTREAM_FETCH,
                     ) -> dict[str, Any]:
    """The broker's CPU while a consumer with ``settings`` reads ``topic`` at its tail
    for as long as ``n`` records take to trickle (trickled by ``producer``; None: an
    idle read), and the send-to-receive latency of those records."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                **settings)
    await consumer.start()
    latencies: list[float] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                latencies.extend(now - float(r.value.split(b":", 1)[0]) for r in records)

    async def work() -> None:
        if producer is None:
            await asyncio.sleep(0.005 * n)
            return
        await _trickle(producer, topic, n)
        deadline = time.monotonic() + 5.0
        while len(latencies) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        await consumer.getmany(timeout_ms=300)  # joined and positioned at the tail
        reader = asyncio.create_task(read())
        cpu = await _broker_cpu_during(pid, work())
        done.set()
        await reader
    finally:
        await consumer.stop()
    ms = [1000 * x for x in latencies]
    return {"broker_cpu_pct": cpu, "records": len(ms), "p50_ms": _round(percentile(ms, 0.5)),
            "p99_ms": _round(percentile(ms, 0.99))}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


async def _measure(bootstrap: str, pid: int, batches: int, sweep: bool, trickle: int
                   ) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=False)
    await producer.start()
    try:
        for i in range(batches):  # one awaited send = one stored batch
            await (await producer.send(BIG, PAYLOAD, key=str(i).encode()))
        cpu = {
            "produce_only_big": await _broker_cpu_during(pid, _trickle(producer, BIG)),
            "idle_consumer_big": (await _tail_read(bootstrap, pid, BIG, None))["broker_cpu_pct"],
            "produce_consume_small": (
                await _tail_read(bootstrap, pid, SMALL, producer))["broker_cpu_pct"],
            "produce_consume_big": (
                await _tail_read(bootstrap, pid, BIG, producer))["broker_cpu_pct"],
        }
        report: dict[str, Any] = {
            "stored_batches": batches,
            "broker_cpu_pct": cpu,
            "big_over_small": round(
                cpu["produce_consume_big"] / max(cpu["produce_consume_small"], 0.1), 2),
        }
        if sweep:
            report["fetch_settings"] = [
                {"setting": name, "topic": "big" if topic == BIG else "small",
                 **await _tail_read(bootstrap, pid, topic, producer, trickle, settings)}
                for name, settings in SWEEP.items() for topic in (SMALL, BIG)
            ]
        return report
    finally:
        await producer.stop()


def run(batches: int, sweep: bool = False, trickle: int = TRICKLE) -> dict[str, Any]:
    with EmbeddedBroker(partitions=4) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic(BIG, 4, 1), NewTopic(SMALL, 4, 1)])
        finally:
            admin.close()
        assert broker.proc is not None
        return asyncio.run(_measure(broker.bootstrap, broker.proc.pid, batches, sweep, trickle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sweep", action="store_true",
                        help="also measure tail-read latency under other consumer fetch settings")
    parser.add_argument("--trickle", type=int, default=TRICKLE,
                        help="records per --sweep case, 5 ms apart")
    args = parser.parse_args()
    report = run(args.batches, args.sweep, args.trickle)
    print(f"{'case (200 records/s)':<28} broker CPU, % of a core")
    for case, pct in report["broker_cpu_pct"].items():
        print(f"{case:<28} {pct:>6}")
    print(f"consume big / small: {report['big_over_small']}x ({args.batches:,} batches stored)")
    if args.sweep:
        print(f"\n{'consumer setting':<22} {'topic':<6} {'CPU %':>6} {'p50 ms':>7} {'p99 ms':>7} records")
        for r in report["fetch_settings"]:
            print(f"{r['setting']:<22} {r['topic']:<6} {r['broker_cpu_pct']:>6} "
                  f"{r['p50_ms']!s:>7} {r['p99_ms']!s:>7} {r['records']:>7}")
    if args.json:
        write_report(args.json, report, ["tansu"])


if __name__ == "__main__":
    main()
