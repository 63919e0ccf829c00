"""Scorer pieces that need no broker: settings, request validation, model factory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from recstream.inference.recommender import ModelLoadError, load_recommender
from recstream.inference.service import ScorerSettings
from recstream.schemas.messages import parse_score_request as parse_request

GOOD = {
    "user_id": "u1",
    "items": ["a", "b"],
    "ts": [1_700_000_000_000, 1_700_000_001_000],
    "event_types": ["view", "click"],
    "trigger_event_id": "e2",
    "trigger_ts": 1_700_000_001_000,
    "ingest_ms": 1_700_000_001_005,
}


def test_settings_defaults_and_environment() -> None:
    s = ScorerSettings.from_env({})
    assert (s.top_k, s.batch_size, s.batch_ms, s.model_dir, s.metrics_port) == (
        10,
        256,
        10,
        None,
        None,
    )
    assert s.group_id == "recstream-scorer" and s.session_timeout_ms == 6000
    s = ScorerSettings.from_env(
        {
            "RECSTREAM_TOP_K": "20",
            "RECSTREAM_SCORER_BATCH": "64",
            "RECSTREAM_SCORER_BATCH_MS": "0",
            "RECSTREAM_MODEL_DIR": "/models/v3",
            "RECSTREAM_METRICS_PORT": "9101",
            "RECSTREAM_KAFKA_BOOTSTRAP": "kafka:9092",
        }
    )
    assert (s.top_k, s.batch_size, s.batch_ms) == (20, 64, 0)
    assert s.model_dir == Path("/models/v3") and s.metrics_port == 9101
    assert s.kafka.bootstrap == "kafka:9092"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECSTREAM_TOP_K": "ten"}, "RECSTREAM_TOP_K must be an integer"),
        ({"RECSTREAM_TOP_K": "0"}, "RECSTREAM_TOP_K must be >= 1"),
        ({"RECSTREAM_SCORER_BATCH": "0"}, "RECSTREAM_SCORER_BATCH"),
        ({"RECSTREAM_SCORER_BACKEND": "tpu"}, "RECSTREAM_SCORER_BACKEND must be one of auto, "),
        ({"RECSTREAM_PARTITIONS": "four"}, "RECSTREAM_PARTITIONS must be an integer"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScorerSettings.from_env(env)


def test_the_backend_names_are_the_selectors() -> None:
    from recstream.inference.backends.select import KINDS
    from recstream.inference.service import BACKENDS

    assert BACKENDS == KINDS


def test_metrics_port_zero_serves_nothing_as_in_the_other_processes() -> None:
    assert ScorerSettings.from_env({"RECSTREAM_METRICS_PORT": "0"}).metrics_port is None
    with pytest.raises(ValueError, match="RECSTREAM_METRICS_PORT must be 0..65535"):
        ScorerSettings.from_env({"RECSTREAM_METRICS_PORT": "70000"})


def test_valid_request_parses() -> None:
    req = parse_request(orjson.dumps(GOOD))
    assert req.items == ["a", "b"] and req.exclude == []


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"{nope",
        orjson.dumps({**GOOD, "items": ["a"]}),  # lengths differ
        orjson.dumps({**GOOD, "event_types": ["view", "teleport"]}),
        orjson.dumps({k: v for k, v in GOOD.items() if k != "user_id"}),
    ],
)
def test_invalid_requests_raise_value_error(raw: bytes | None) -> None:
    with pytest.raises(ValueError):
        parse_request(raw)


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_recommender(tmp_path / "nope")


def test_scorer_scores_at_once_only_when_nothing_more_waits_at_the_broker() -> None:
    from aiokafka import TopicPartition
    from recstream.inference.cooccurrence import CooccurrenceRecommender
    from recstream.inference.service import Scorer, ScorerMetrics

    class Consumer:  # aiokafka's highwater(): None until fetched, asserts the assignment
        def __init__(self, ends: dict[TopicPartition, int | None]) -> None:
            self.ends = ends

        def highwater(self, tp: TopicPartition) -> int | None:
            assert tp in self.ends, "Partition is not assigned"
            return self.ends[tp]

    a, b = TopicPartition("score-requests", 0), TopicPartition("score-requests", 1)
    scorer = Scorer(ScorerSettings(), CooccurrenceRecommender(), ScorerMetrics())
    assert scorer._caught_up(Consumer({}))  # nothing read yet
    scorer.batcher.skip(a, 9)  # offsets read: a up to 9, b up to 4
    scorer.batcher.skip(b, 4)
    assert scorer._caught_up(Consumer({a: 10, b: 5}))
    assert not scorer._caught_up(Consumer({a: 10, b: 7}))  # b: offsets 5 and 6 still there
    assert scorer._caught_up(Consumer({a: 10, b: None}))  # b's end unknown
    assert scorer._caught_up(Consumer({a: 10}))  # b revoked, not yet dropped: not waited for
    scorer.batcher.drop_partitions([b])
    assert b not in scorer.batcher.next_offsets()


def test_pipelined_batches_commit_after_delivery_and_send_in_order() -> None:
    """Batch 2 is scored while batch 1 is delivered; batch 1's offsets are committed
    only once all its sends are acknowledged, and batch 2's sends start only then."""
    import asyncio

    from aiokafka import TopicPartition
    from recstream.inference.cooccurrence import CooccurrenceRecommender
    from recstream.inference.service import Scorer, ScorerMetrics
    from recstream.schemas.messages import ScoreRequest

    tp = TopicPartition("score-requests", 0)

    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[bytes, asyncio.Future[None]]] = []

        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.sent.append((key, ack))
            return ack

    class Consumer:
        def __init__(self) -> None:
            self.commits: list[dict[TopicPartition, int]] = []

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            self.commits.append(dict(offsets))

    def add(scorer: Scorer, offset: int) -> None:
        req = ScoreRequest.model_validate({**GOOD, "user_id": f"u{offset}"})
        scorer.batcher.add(tp, offset, req.user_id, req.trigger_ts, req, 0.0)

    async def settle_loop() -> None:  # the scoring thread included
        for _ in range(10):
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        scorer = Scorer(ScorerSettings(), CooccurrenceRecommender(), ScorerMetrics())
        producer, consumer = Producer(), Consumer()
        add(scorer, 0)
        add(scorer, 1)
        first = await scorer._score(scorer.batcher.take(), producer, consumer, None)  # type: ignore[arg-type]
        await settle_loop()
        assert [k for k, _ in producer.sent] == [b"u0", b"u1"] and consumer.commits == []
        add(scorer, 2)
        second = asyncio.ensure_future(
            scorer._score(scorer.batcher.take(), producer, consumer, first))  # type: ignore[arg-type]
        await settle_loop()
        # Scored, but waiting for batch 1: no commit, no send of batch 2 yet.
        assert len(producer.sent) == 2 and consumer.commits == [] and not second.done()
        producer.sent[0][1].set_result(None)
        await settle_loop()
        assert consumer.commits == [] and len(producer.sent) == 2  # one ack is not all
        producer.sent[1][1].set_result(None)
        await settle_loop()
        assert consumer.commits == [{tp: 2}]
        assert [k for k, _ in producer.sent] == [b"u0", b"u1", b"u2"]
        in_flight = await second
        producer.sent[2][1].set_result(None)
        await scorer._settle(consumer, in_flight)  # type: ignore[arg-type]
        assert consumer.commits == [{tp: 2}, {tp: 3}]
        assert scorer.n_sent == 3

    asyncio.run(scenario())
