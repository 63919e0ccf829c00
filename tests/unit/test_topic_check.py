"""The worker's start-up check of per-user topics' partition counts (pure parts)."""

from __future__ import annotations

from recstream.stream.app import internal_topics
from recstream.stream.kafka_admin import (
    WORKER_TOPICS,
    error_message,
    mismatches,
    partition_counts,
    replication_factor,
    unled,
)


def test_counts_come_from_describe_topics_and_skip_errors() -> None:
    described = [
        {"name": "events", "error_code": 0, "partitions": [{}, {}, {}, {}]},
        {"name": "score-requests", "error_code": 0, "partitions": [{}] * 8},
        {"name": "gone", "error_code": 3, "partitions": []},
    ]
    assert partition_counts(described) == {"events": 4, "score-requests": 8}


def test_only_existing_worker_topics_with_another_count_mismatch() -> None:
    counts = {"events": 4, "score-requests": 8, "model-updates": 1, "recommendations": 4}
    assert mismatches(counts, 4, WORKER_TOPICS) == {"score-requests": 8}
    assert mismatches(counts, 8, WORKER_TOPICS) == {"events": 4, "recommendations": 4}
    assert mismatches({}, 4, WORKER_TOPICS) == {}


def test_the_message_names_each_topic_and_the_setting() -> None:
    text = error_message({"score-requests": 8, "events": 2}, 4)
    assert "RECSTREAM_PARTITIONS=4" in text
    assert "events has 2, score-requests has 8" in text


def test_the_changelogs_take_the_replication_of_events() -> None:
    def topic(name: str, replicas: int, error: int = 0) -> dict:
        parts = [{"partition_index": i, "replica_nodes": list(range(replicas))} for i in range(4)]
        return {"name": name, "error_code": error, "partitions": parts}

    described = [topic("score-requests", 1), topic("events", 3)]
    assert replication_factor(described, "events") == 3
    assert replication_factor(described, "score-requests") == 1
    assert replication_factor(described, "nope") is None
    assert replication_factor([topic("events", 3, error=3)], "events") is None


def test_a_topic_counts_as_ready_only_once_every_partition_has_a_leader() -> None:
    described = [
        {"name": "a", "error_code": 0, "partitions": [{"leader_id": 1}, {"leader_id": 0}]},
        {"name": "b", "error_code": 0, "partitions": [{"leader_id": 1}, {"leader_id": -1}]},
        {"name": "c", "error_code": 0, "partitions": []},
        {"name": "d", "error_code": 3, "partitions": [{"leader_id": 1}]},
        {"name": "f", "error_code": 0, "partitions": [{"leader": 1}]},  # not kafka-python's key
    ]
    assert unled(described, ["a", "b", "c", "d", "e", "f"]) == {"b", "c", "d", "e", "f"}


def test_the_worker_makes_ready_its_changelogs_compacted_and_its_repartition_topic() -> None:
    assert internal_topics("w") == {
        "w-user_sequences-changelog": {"cleanup.policy": "compact"},
        "w-last_recommendations-changelog": {"cleanup.policy": "compact"},
        "w-events-repartition": {},
    }
