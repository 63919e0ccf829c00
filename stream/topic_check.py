"""Start-up check: the per-user topics the worker uses have its partition count.

The worker places a user by ``murmur2(key) % RECSTREAM_PARTITIONS``; a topic of
another count would misplace users silently, so the worker refuses to start and
names the topic. Topics that do not exist yet are left to whoever creates them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from recstream.schemas.settings import KafkaSettings
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS, SCORE_REQUESTS, USER_DELETIONS
from recstream.stream.kafka_admin import BrokerUnreachable, admin_call

log = logging.getLogger(__name__)

#: Read or written per user by the worker.
WORKER_TOPICS = (EVENTS, SCORE_REQUESTS, RECOMMENDATIONS, USER_DELETIONS)


class PartitionCountError(ValueError):
    """A per-user topic's partition count differs from the worker's."""


def partition_counts(described: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{topic: partitions}`` from kafka-python's ``describe_topics()`` (errors left out)."""
    return {
        str(t["name"]): len(t["partitions"])
        for t in described
        if not t.get("error_code") and t.get("name") is not None
    }


def mismatches(counts: Mapping[str, int], want: int, topics: Iterable[str]) -> dict[str, int]:
    """The ``topics`` that exist in ``counts`` with a count other than ``want``."""
    return {t: counts[t] for t in topics if t in counts and counts[t] != want}


def error_message(bad: Mapping[str, int], want: int) -> str:
    listed = ", ".join(f"{t} has {n}" for t, n in sorted(bad.items()))
    return (
        f"partition counts differ from RECSTREAM_PARTITIONS={want}: {listed}. Every "
        "per-user topic must have the worker's partition count (a user's partition is "
        f"murmur2(key) % {want}); set RECSTREAM_PARTITIONS to the topics' count or "
        "recreate the topics"
    )


def check_partition_counts(
    kafka: KafkaSettings, topics: Iterable[str] = WORKER_TOPICS, timeout_s: float = 30.0
) -> None:
    """Raise :class:`PartitionCountError` if an existing topic of ``topics`` has
    another partition count than ``kafka.partitions``; a broker that does not
    answer within ``timeout_s`` is left to the clients (logged, passed)."""
    try:
        # All topics: asking for some by name may auto-create them.
        counts = partition_counts(admin_call(kafka, lambda a: a.describe_topics(), timeout_s))
    except BrokerUnreachable as exc:
        log.warning("partition counts not checked: %s", exc)
        return
    bad = mismatches(counts, kafka.partitions, topics)
    if bad:
        raise PartitionCountError(error_message(bad, kafka.partitions))
    log.info("partition counts match RECSTREAM_PARTITIONS=%d: %s", kafka.partitions,
             {t: counts[t] for t in topics if t in counts} or "no topic yet")  # fmt: skip
