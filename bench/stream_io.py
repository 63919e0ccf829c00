"""What ``bench stream`` needs around the pipeline: the replayed records, bulk
produce, the raw aiokafka read (the ceiling) and per-process peak memory."""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from recstream.schemas.messages import Event, now_ms

#: Synthetic events are generated in chunks of this many (one seed each), so
#: 1M events never sit in memory as pydantic objects, only as bytes.
CHUNK = 100_000
#: Synthetic users per event when --users is not given: enough users that a
#: sequence stays short. With few users every event rewrites a long state
#: (and the in-memory broker holds every changelog record and score request).
EVENTS_PER_USER = 20


def _encoded(events: list[Event]) -> list[tuple[bytes, bytes]]:
    return [(e.user_id.encode(), e.model_dump_json(exclude_none=True).encode()) for e in events]


def synthetic_records(n: int, users: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``n`` synthetic events as (key, value), in time order, ending before now."""
    from recstream.synthetic import StreamShape, generate

    shape = StreamShape()
    chunks = max(1, -(-n // CHUNK))
    # Chunk k covers its own span of time, the last one ending about an hour ago.
    start = now_ms() - chunks * shape.span_ms - 3_600_000
    out: list[tuple[bytes, bytes]] = []
    for k in range(chunks):
        size = min(CHUNK, n - k * CHUNK)
        data = generate(
            n_events=size,
            n_users=users,
            n_items=max(1000, users // 2),
            seed=seed + k,
            start_ms=start + k * shape.span_ms,
            shape=shape,
        )
        out.extend(_encoded(data.events))
    return out


def movielens_records(directory: Path, n: int) -> list[tuple[bytes, bytes]]:
    """The first ``n`` ratings of a MovieLens atomic folder, in time order, shifted to now."""
    from recstream.movielens import load

    return _encoded(load(directory, limit=n).events)


async def produce_all(
    bootstrap: str, records: list[tuple[bytes, bytes]], topic: str
) -> tuple[float, int]:
    """Produce every record as fast as aiokafka goes; return (seconds, failures)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        enable_idempotence=False,  # docs/embedded-broker.md defect 3
        acks=1,
    )
    await producer.start()
    failures = 0
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[object]] = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                results = await asyncio.gather(*pending, return_exceptions=True)
                failures += sum(isinstance(r, Exception) for r in results)
                pending = []
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures += sum(isinstance(r, Exception) for r in results)
    finally:
        await producer.stop()
    return time.perf_counter() - started, failures


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> list[TopicPartition]:
    """Every partition of ``topics``, from the broker's metadata. A consumer started
    without topics knows none of them on Kafka (its bootstrap asks for the metadata
    of no topic; Tansu answers with every topic), so they are asked for here."""
    names = list(topics)
    # aiokafka has no public call for this on a consumer that assign()s partitions.
    await consumer._client.set_topics(names)
    return [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]


async def raw_read_rate(bootstrap: str, topic: str, expected: int, timeout_s: float) -> float:
    """Messages/s of a plain aiokafka consumer reading ``topic`` from the start (no group).

    The ceiling for the worker: the same records through the same client
    library, without Faust, JSON validation or table writes.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,  # Tansu holds a fetch for the whole wait (see README)
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, [topic])
        if not tps:
            raise TimeoutError(f"raw read: the broker names no partition of {topic}")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw read: {seen} of {expected} records in {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=200, max_records=100_000)
            seen += sum(len(records) for records in batches.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a live process (Linux ``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far (Linux ``/proc``)."""
    try:
        # Fields after the ")" that closes the command name: utime, stime are 12, 13.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_pct(before: float | None, after: float | None, seconds: float) -> float | None:
    """CPU between two :func:`cpu_seconds` readings, in % of one core (None: unreadable)."""
    if before is None or after is None or seconds <= 0:
        return None
    return round(100 * (after - before) / seconds, 1)


class CpuSampler:
    """Reads each process's CPU time every ``every_s`` seconds, in a thread, so that
    a replay's CPU can be cut into intervals afterwards (:meth:`pct_between`).

    A latency that rises over a fixed-rate replay is a cost that grows somewhere;
    these samples say in which process (on the embedded broker: the broker's,
    whose fetch cost grows with the batches it stores).
    """

    def __init__(self, pids: Mapping[str, int], every_s: float = 1.0) -> None:
        self._pids = dict(pids)
        self._every_s = every_s
        #: (wall-clock seconds, {name: cpu seconds or None}), in time order.
        self.samples: list[tuple[float, dict[str, float | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        self.samples.append(
            (time.time(), {name: cpu_seconds(pid) for name, pid in self._pids.items()})
        )

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def pct_overall(self) -> dict[str, float | None]:
        """Each process's CPU in % of one core from the first sample to the last."""
        return self.pct_between(-math.inf, math.inf)

    def pct_between(self, start_s: float, end_s: float) -> dict[str, float | None]:
        """Each process's CPU in % of one core from the last sample at or before
        ``start_s`` to the first at or after ``end_s`` (wall clock; clipped to the
        samples taken)."""
        times = [t for t, _ in self.samples]
        if len(times) < 2:
            return dict.fromkeys(self._pids)
        i = max(0, bisect.bisect_right(times, start_s) - 1)
        j = min(len(times) - 1, max(i + 1, bisect.bisect_left(times, end_s)))
        (t0, before), (t1, after) = self.samples[i], self.samples[j]
        return {name: cpu_pct(before[name], after[name], t1 - t0) for name in self._pids}

