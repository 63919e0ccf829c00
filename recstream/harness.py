"""What the demo and the benchmarks share around a running pipeline: the replay
harness (warm-up, paced replay, drain, the latency reader) and percentiles.

A replay sends events to ``events`` from this process and reads
``recommendations`` back without a consumer group; each recommendation whose
trigger event was a timed send is timed from that send to its receipt (wall
clocks of one host, compared with the worker's and the scorer's stamps).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from recstream.schemas.messages import Recommendation
from recstream.schemas.topics import EVENTS_DLQ, RECOMMENDATIONS

#: While waiting for the pipeline, one event is sent this often.
WARMUP_INTERVAL_S = 0.5
#: After the replay, stop once no recommendation arrived for this long ...
QUIET_S = 3.0
#: ... or after this long at most.
DRAIN_MAX_S = 30.0
#: Latency segments: the sender -> the worker's batch starts (``ingest_ms``: fetch
#: and the batch window), -> the scorer sends the list (``emitted_ms``: worker
#: processing, the score-requests hop, scorer batching and scoring), -> the reader.
SEGMENTS = ("to_worker", "worker_to_scorer_send", "scorer_send_to_reader")


class ReplayError(RuntimeError):
    """The pipeline did not answer, the stream ran out, or the reader failed."""


class NotReady(ReplayError):
    """No recommendation came back within the start-up time."""


def wall_ms() -> float:
    # Wall clock, not monotonic: compared with the worker's and scorer's stamps.
    return time.time_ns() / 1e6


def percentile(
    values: Iterable[float], q: float, *, method: Literal["rank", "nearest"] = "rank"
) -> float | None:
    """The ``q`` quantile (0 to 1) of ``values``; None when there are none.

    ``rank``: the sorted values' element ``int(q * n)`` (nearest rank, ties up),
    what the latency figures of the demo, the dashboard and ``bench stream`` use.
    ``nearest``: element ``round(q * (n - 1))``, numpy's ``method="nearest"``,
    what ``bench scorer`` and ``bench hotswap`` report.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    n = len(ordered)
    index = int(q * n) if method == "rank" else max(0, round(q * (n - 1)))
    return ordered[min(n - 1, index)]


@dataclass
class Latency:
    """What the reader saw: every recommendation counted, the timed ones measured."""

    #: The names the three segments (see ``SEGMENTS``) are reported under.
    segment_names: tuple[str, str, str] = SEGMENTS
    #: event_id -> wall ms at send, for timed sends not yet answered.
    sent_at: dict[str, float] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list)
    #: When each sample's event was sent (wall ms), for the latency over time.
    sample_sent_ms: list[float] = field(default_factory=list)
    #: The same samples cut at the worker's read and the scorer's send.
    segments_ms: dict[str, list[float]] = field(default_factory=dict)
    #: Every trigger event id answered, timed or not.
    triggers: set[str] = field(default_factory=set)
    recommendations: int = 0
    first_at: float | None = None
    last_at: float = 0.0

    def __post_init__(self) -> None:
        for name in self.segment_names:
            self.segments_ms.setdefault(name, [])

    def timed_send(self, event_id: str) -> None:
        self.sent_at[event_id] = wall_ms()

    def received(self, rec: Recommendation, now: float) -> float | None:
        """Count ``rec``, read at wall ms ``now``; its latency if its trigger was timed.

        The send is popped: a redelivered recommendation is not a second sample."""
        self.recommendations += 1
        self.last_at = now
        if self.first_at is None:
            self.first_at = now
        self.triggers.add(rec.trigger_event_id)
        sent = self.sent_at.pop(rec.trigger_event_id, None)
        if sent is None:
            return None
        self.samples_ms.append(now - sent)
        self.sample_sent_ms.append(sent)
        to_worker, to_scorer, to_reader = (self.segments_ms[n] for n in self.segment_names)
        to_worker.append(rec.ingest_ms - sent)
        to_scorer.append(rec.emitted_ms - rec.ingest_ms)
        to_reader.append(now - rec.emitted_ms)
        return now - sent


OnRecommendation = Callable[[Recommendation, float], object]


async def read_recommendations(
    consumer: AIOKafkaConsumer,
    on_recommendation: OnRecommendation,
    on_dead_letters: Callable[[int], object] | None = None,
) -> None:
    """Hand every recommendation to ``on_recommendation(rec, wall ms read)``; records
    of any other topic (the DLQ) are only counted, to ``on_dead_letters``."""
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        now = wall_ms()
        for tp, records in batches.items():
            if tp.topic != RECOMMENDATIONS:
                if on_dead_letters is not None:
                    on_dead_letters(len(records))
                continue
            for record in records:
                on_recommendation(Recommendation.model_validate_json(record.value), now)


@asynccontextmanager
async def replay_clients(
    bootstrap: str,
    on_recommendation: OnRecommendation,
    *,
    linger_ms: int = 5,
    fetch_wait_ms: int = 20,
    on_dead_letters: Callable[[int], object] | None = None,
) -> AsyncIterator[tuple[AIOKafkaProducer, asyncio.Task[None]]]:
    """(a started producer, the reader task) for one replay; stopped on the way out.

    The reader has no group: it gets every partition at once and commits nothing.
    With ``on_dead_letters`` it also reads the DLQ."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, enable_idempotence=False
    )
    topics = (RECOMMENDATIONS, EVENTS_DLQ) if on_dead_letters else (RECOMMENDATIONS,)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_wait_ms,  # the embedded broker holds fetches long
    )
    await producer.start()
    await consumer.start()
    reader = asyncio.create_task(read_recommendations(consumer, on_recommendation,
                                                      on_dead_letters))  # fmt: skip
    try:
        yield producer, reader
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


def check_reader(reader: asyncio.Task[None]) -> None:
    """Raise if the reader task died."""
    if reader.done() and not reader.cancelled() and reader.exception() is not None:
        raise ReplayError(f"reading recommendations failed: {reader.exception()!r}")


async def warm_up(
    send_next: Callable[[], Awaitable[bool]],
    ready: Callable[[], bool],
    check: Callable[[], None],
    timeout_s: float,
    interval_s: float = WARMUP_INTERVAL_S,
) -> float:
    """Trickle events (``send_next()``; False: the stream ran out) until ``ready()``,
    the first recommendation showing that the pipeline is live; return the seconds."""
    started = time.monotonic()
    while not ready():
        check()
        if time.monotonic() - started > timeout_s:
            raise NotReady(f"no recommendation within {timeout_s:.0f}s of start-up")
        if not await send_next():
            raise ReplayError("the stream ran out before the pipeline produced a recommendation")
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


async def paced(
    send_next: Callable[[int], Awaitable[bool]],
    planned: int,
    rate: float,
    check: Callable[[float], None],
    *,
    max_s: float | None = None,
    tick_s: float = 0.01,
) -> int:
    """Send ``planned`` events at ``rate`` a second (``send_next(i)`` sends the i-th;
    False: the stream ran out), ``check(elapsed s)`` between bursts, for ``max_s`` at
    most; return how many were sent."""
    t0 = time.monotonic()
    sent = 0
    while sent < planned:
        elapsed = time.monotonic() - t0
        if max_s is not None and elapsed >= max_s:
            break
        due = min(planned, int(elapsed * rate) + 1)
        while sent < due:
            if not await send_next(sent):
                return sent
            sent += 1
        check(elapsed)
        await asyncio.sleep(tick_s)
    return sent


async def drain(
    latency: Latency,
    check: Callable[[], None],
    done: Callable[[], bool] = lambda: False,
    *,
    quiet_s: float = QUIET_S,
    max_s: float = DRAIN_MAX_S,
) -> None:
    """After the replay: wait until ``done()``, or until no recommendation came for
    ``quiet_s``, for ``max_s`` at most."""
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        check()
        if done() or wall_ms() - latency.last_at > quiet_s * 1000:
            break
        await asyncio.sleep(0.1)
