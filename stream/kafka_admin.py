"""The worker's start-up checks against the brokers: one admin request retried until
they answer (:func:`admin_call`), and the partition counts of the per-user topics.

The worker places a user by ``murmur2(key) % RECSTREAM_PARTITIONS``; a topic of
another count would misplace users silently, so the worker refuses to start and
names the topic. Topics that do not exist yet are left to whoever creates them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from recstream.schemas.settings import KafkaSettings, bounded_bootstrap
from recstream.schemas.topics import EVENTS, RECOMMENDATIONS, SCORE_REQUESTS, USER_DELETIONS

T = TypeVar("T")
log = logging.getLogger(__name__)


class BrokerUnreachable(RuntimeError):
    """No admin request got an answer within the time given; ``last`` is the last failure."""

    def __init__(self, bootstrap: str, timeout_s: float, last: Exception) -> None:
        super().__init__(f"{bootstrap} did not answer within {timeout_s:.0f}s ({last!r})")
        self.last = last


#: Seconds between the "still waiting" lines while the brokers do not answer.
WAITING_EVERY_S = 5.0


def admin_call(kafka: KafkaSettings, call: Callable[[Any], T], timeout_s: float = 30.0) -> T:
    """``call(admin)`` on a fresh kafka-python admin client (with the security
    settings), retried every 0.5 s until it succeeds or ``timeout_s`` passed.
    While it waits it logs one WARNING every :data:`WAITING_EVERY_S` with the
    last failure, instead of kafka-python's ERROR line per refused connection."""
    from kafka import KafkaAdminClient

    start = time.monotonic()
    deadline, next_note = start + timeout_s, start + WAITING_EVERY_S
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        while True:
            # Each attempt's bootstrap bounded: kafka-python 3's 30 s default alone
            # would overrun a shorter wait and hide every attempt after the first.
            left_ms = int(1000 * (deadline - time.monotonic()))
            attempt = {"request_timeout_ms": 5000,
                       **bounded_bootstrap(max(500, min(5000, left_ms)))}
            try:
                admin = KafkaAdminClient(**kafka.kafka_python_kwargs(), **attempt)
                try:
                    return call(admin)
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable yet"
                now = time.monotonic()
                if now >= deadline:
                    raise BrokerUnreachable(kafka.bootstrap, timeout_s, exc) from exc
                if now >= next_note:
                    log.warning("waiting for the brokers at %s (%.0fs of %.0fs): %r",
                                kafka.bootstrap, now - start, timeout_s, exc)
                    next_note = now + WAITING_EVERY_S
                time.sleep(0.5)
    finally:
        kafka_log.setLevel(level)


#: Read or written per user by the worker.
WORKER_TOPICS = (EVENTS, SCORE_REQUESTS, RECOMMENDATIONS, USER_DELETIONS)


class PartitionCountError(ValueError):
    """A per-user topic's partition count differs from the worker's."""


def partition_counts(described: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{topic: partitions}`` from kafka-python's ``describe_topics()`` (errors left out)."""
    return {str(t["name"]): len(t["partitions"]) for t in described
            if not t.get("error_code") and t.get("name") is not None}  # fmt: skip


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
) -> int | None:
    """Raise :class:`PartitionCountError` if an existing topic of ``topics`` has
    another partition count than ``kafka.partitions``; a broker that does not
    answer within ``timeout_s`` is left to the clients (logged, passed).

    Returns the replication factor of ``events`` (None if unknown): the worker
    creates its changelogs with it, so a cluster replicates state like input.
    """
    try:
        # All topics: asking for some by name may auto-create them.
        described = admin_call(kafka, lambda a: a.describe_topics(), timeout_s)
    except BrokerUnreachable as exc:
        log.warning("partition counts not checked: %s", exc)
        return None
    counts = partition_counts(described)
    bad = mismatches(counts, kafka.partitions, topics)
    if bad:
        raise PartitionCountError(error_message(bad, kafka.partitions))
    log.info("partition counts match RECSTREAM_PARTITIONS=%d: %s", kafka.partitions,
             {t: counts[t] for t in topics if t in counts} or "no topic yet")  # fmt: skip
    return replication_factor(described, EVENTS)


def replication_factor(described: Iterable[Mapping[str, Any]], topic: str) -> int | None:
    """Replicas of ``topic``'s first partition in a ``describe_topics()`` answer."""
    for t in described:
        if t.get("name") == topic and not t.get("error_code") and t["partitions"]:
            return len(t["partitions"][0]["replica_nodes"]) or None
    return None


#: Seconds to wait for topics just created to reach the brokers' metadata.
METADATA_WAIT_S = 30.0


def ensure_topics(
    kafka: KafkaSettings, configs: Mapping[str, Mapping[str, str]], replication: int,
    timeout_s: float = METADATA_WAIT_S,
) -> list[str]:
    """Create the topics of ``configs`` (name -> topic config) that are missing, with
    ``kafka.partitions`` partitions, and wait until every partition of each has a
    leader in the brokers' metadata; return the names created.

    Faust creates its changelog and repartition topics only as it starts, and Kafka
    publishes a new topic's metadata a moment after creating it: a first rebalance in
    between assigns no partition of it, and the first table write then fails with
    PartitionsMismatch ("... changelog topic has 0 partitions").
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    def create(admin: Any) -> list[str]:
        wanted = [n for n in configs if n not in set(admin.list_topics())]
        if wanted:
            try:
                admin.create_topics([
                    NewTopic(n, num_partitions=kafka.partitions, replication_factor=replication,
                             topic_configs=dict(configs[n]))
                    for n in wanted
                ])  # fmt: skip
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        return wanted

    created = admin_call(kafka, create, timeout_s)
    deadline = time.monotonic() + timeout_s
    while missing := unled(admin_call(kafka, lambda a: a.describe_topics(list(configs)),
                                      timeout_s), configs):  # fmt: skip
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(kafka.bootstrap, timeout_s,
                                    RuntimeError(f"no leader yet for {sorted(missing)}"))
        time.sleep(0.2)
    if created:
        log.info("created %s (%d partitions, replication %d)", created, kafka.partitions,
                 replication)  # fmt: skip
    return created


def unled(described: Iterable[Mapping[str, Any]], names: Iterable[str]) -> set[str]:
    """The ``names`` absent from a ``describe_topics()`` answer (kafka-python's metadata
    dicts: ``leader_id`` per partition, -1 while none) or with a leaderless partition."""
    led = {str(t["name"]) for t in described
           if not t.get("error_code") and t.get("partitions")
           and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])}  # fmt: skip
    return set(names) - led
