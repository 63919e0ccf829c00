"""The scorer as a real process against the embedded broker.

Every valid score request gets exactly one recommendation with k items and none
of the user's history; garbage is skipped without a crash; offsets are
committed; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from recstream.schemas import Recommendation, ScoreRequest
from recstream.schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS

from recstream.broker import Broker
from recstream.processes import Child, free_port, recstream_command

pytestmark = pytest.mark.integration

K = 5
CATALOGUE = [f"i{n:03d}" for n in range(60)]
T0 = 1_700_000_000_000
#: Generous: a scorer joins its group in ~5 s, but this machine is shared and slow.
READY_S = 120.0
DONE_S = 120.0


def request(user: str, trigger: str, rng: random.Random, length: int) -> ScoreRequest:
    items = rng.sample(CATALOGUE, length)
    ts = [T0 + 1000 * i for i in range(length)]
    return ScoreRequest(
        user_id=user,
        items=items,
        ts=ts,
        event_types=["view"] * length,
        exclude=rng.sample([i for i in CATALOGUE if i not in items], 2),
        trigger_event_id=trigger,
        trigger_ts=ts[-1],
        ingest_ms=int(time.time() * 1000),
    )


async def produce(bootstrap: str, values: list[tuple[str, bytes]]) -> dict[int, int]:
    """Send and wait for acks; return the next offset per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(SCORE_REQUESTS, v, key=k.encode()) for k, v in values]
        ends: dict[int, int] = {}
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


async def collect(
    consumer: AIOKafkaConsumer,
    wanted: set[str],
    got: dict[str, list[Recommendation]],
    scorer: Child,
    timeout_s: float,
    linger_s: float = 0.0,
) -> float:
    """Read recommendations until every trigger in ``wanted`` has one, then ``linger_s`` more.

    Returns the monotonic time at which the last wanted one arrived.
    """
    deadline = time.monotonic() + timeout_s
    done_at: float | None = None
    while True:
        scorer.check_alive()
        now = time.monotonic()
        if done_at is None and wanted <= got.keys():
            done_at = now
        if done_at is not None and now - done_at >= linger_s:
            return done_at
        if now > deadline:
            missing = sorted(wanted - got.keys())
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} requests got no recommendation within "
                f"{timeout_s:.0f}s, e.g. {missing[:5]}\n{scorer.describe_log()}"
            )
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for r in records:
                rec = Recommendation.model_validate_json(r.value)
                got.setdefault(rec.trigger_event_id, []).append(rec)


async def committed_offsets(bootstrap: str, partitions: int) -> dict[int, int]:
    """The scorer group's committed offsets (read without joining the group)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="recstream-scorer")
    await reader.start()
    try:
        out = {}
        for p in range(partitions):
            offset = await reader.committed(TopicPartition(SCORE_REQUESTS, p))
            out[p] = -1 if offset is None else offset
        return out
    finally:
        await reader.stop()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not exported:\n{text}")


def test_every_request_gets_one_recommendation(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {
        **recstream_env,
        "RECSTREAM_TOP_K": str(K),
        "RECSTREAM_SCORER_BATCH": "64",
        "RECSTREAM_METRICS_PORT": str(metrics_port),
    }
    scorer = Child("scorer", recstream_command("scorer"), env, tmp_path / "scorer.log").start()
    try:
        asyncio.run(_exercise(broker.bootstrap, scorer))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        text = metrics.read().decode()
        assert metric(text, "recstream_scorer_recommendations_total") >= 440  # 40 warm + 400
        assert metric(text, 'recstream_scorer_invalid_requests_total{reason="schema"}') >= 3
        assert metric(text, "recstream_scorer_batch_size_count") >= 1
    finally:
        scorer.terminate()
        code = scorer.wait(30)
        if code is None:
            scorer.kill()
    assert code == 0, (
        f"scorer did not stop cleanly on SIGTERM (code {code})\n{scorer.describe_log()}"
    )
    assert "scorer stopped" in scorer.log_tail(200)


async def _exercise(bootstrap: str, scorer: Child) -> None:
    rng = random.Random(1)
    consumer = AIOKafkaConsumer(
        RECOMMENDATIONS, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: dict[str, list[Recommendation]] = {}
        # Warm-up: the model learns the catalogue from these, and the group forms.
        warm = [request(f"warm{n}", f"w{n}", rng, 8) for n in range(40)]
        await produce(bootstrap, [(r.user_id, r.model_dump_json().encode()) for r in warm])
        await collect(consumer, {r.trigger_event_id for r in warm}, got, scorer, READY_S)

        # The real run: distinct users, so no coalescing; garbage mixed in.
        reqs = [request(f"user{n}", f"t{n}", rng, rng.randint(1, 10)) for n in range(400)]
        values = [(r.user_id, r.model_dump_json().encode()) for r in reqs]
        for n, junk in enumerate([b"{not json", b"", b'{"user_id": "x"}', b"[1,2,3]"]):
            values.insert(50 * (n + 1), (f"junk{n}", junk))
        started = time.monotonic()
        ends = await produce(bootstrap, values)
        wanted = {r.trigger_event_id for r in reqs}
        elapsed = await collect(consumer, wanted, got, scorer, DONE_S, linger_s=2) - started
        print(f"\nscorer: {len(reqs)} requests answered in {elapsed:.2f}s end to end")

        for r in reqs:
            recs = got[r.trigger_event_id]
            assert len(recs) == 1, f"{r.trigger_event_id}: {len(recs)} recommendations"
            rec = recs[0]
            ranked = [x.item_id for x in rec.items]
            assert rec.user_id == r.user_id and rec.model_version == "cooccurrence-v1"
            assert len(ranked) == K and len(set(ranked)) == K
            assert not set(ranked) & (set(r.items) | set(r.exclude)), r.trigger_event_id
            assert rec.trigger_ts == r.trigger_ts and rec.ingest_ms == r.ingest_ms
            assert rec.emitted_ms >= rec.ingest_ms
        assert "invalid score request" in scorer.log_tail(400)

        # At-least-once: the group's offsets reach the end of what was produced.
        deadline = time.monotonic() + 30
        while True:
            committed = await committed_offsets(bootstrap, 4)
            if all(committed.get(p, -1) >= end for p, end in ends.items()):
                break
            assert time.monotonic() < deadline, f"committed {committed}, produced up to {ends}"
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
