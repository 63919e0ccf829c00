"""The worker against Tansu only: true changelog ends and a short fetch wait.

Tansu answers ListOffsets(latest) short by its last batch (docs/embedded-broker.md,
defect 1), so Faust's table recovery would stop early or refuse local state.
:func:`install` corrects the end offsets Faust's recovery asks for with a fetch
of the last batch, and shortens the fetch wait (defect 5). Against other
brokers nothing is patched; ``recovery_consistency_check`` stays on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from recstream.schemas import KafkaSettings
from recstream.stream import faust_internals
from recstream.stream.faust_internals import Highwaters
from recstream.stream.kafka_admin import BrokerUnreachable, admin_call

log = logging.getLogger(__name__)

#: The consumer's fetch wait against Tansu (the worker's RECSTREAM_FETCH_WAIT_MS default).
TANSU_FETCH_MAX_WAIT_MS = 20

#: Cluster ids of Tansu brokers start with this (the embedded one's is ``tansu_cluster``).
TANSU_CLUSTER_PREFIX = "tansu"

TPKey = TypeVar("TPKey", bound=tuple[str, int])


class BrokerDetectionError(RuntimeError):
    pass


def detect_cluster_id(kafka: KafkaSettings, timeout_s: float = 30.0) -> str | None:
    """Ask the brokers for their cluster id, retrying until ``timeout_s``."""
    try:
        cluster_id = admin_call(kafka, lambda a: a.describe_cluster().get("cluster_id"), timeout_s)
    except BrokerUnreachable as exc:
        raise BrokerDetectionError(
            f"no broker at {kafka.bootstrap} answered within {timeout_s:.0f}s (last error: "
            f"{exc.last!r}). Check RECSTREAM_KAFKA_BOOTSTRAP and that the brokers are up "
            "(RECSTREAM_BROKER_WAIT_S sets this wait). Brokers that are up but refuse "
            "DescribeCluster: RECSTREAM_BROKER_COMPAT=off (real Kafka) or =tansu skips it"
        ) from exc
    return None if cluster_id is None else str(cluster_id)


def compat_wanted(
    kafka: KafkaSettings,
    detect: Callable[[KafkaSettings], str | None] = detect_cluster_id,
) -> tuple[bool, str]:
    """Decide whether the fix must be active; return (active, why) for the log."""
    mode = kafka.broker_compat
    if mode == "off":
        return False, "RECSTREAM_BROKER_COMPAT=off"
    if mode == "tansu":
        return True, "RECSTREAM_BROKER_COMPAT=tansu"
    cluster_id = detect(kafka)
    is_tansu = cluster_id is not None and cluster_id.lower().startswith(TANSU_CLUSTER_PREFIX)
    return is_tansu, f"RECSTREAM_BROKER_COMPAT=auto, cluster_id={cluster_id!r}"


async def true_end_offsets(
    reported: Mapping[TPKey, int], consumer_kwargs: Mapping[str, Any], timeout_s: float = 15.0
) -> dict[TPKey, int]:
    """Correct Tansu's end offsets to ``last offset of the last batch + 1``: ``reported
    - 1`` is the first offset of that batch, so one fetch from there returns it."""
    result = dict(reported)
    wanted = {TopicPartition(*tp): tp for tp, end in reported.items()
              if end is not None and end > 0}  # fmt: skip
    if not wanted:
        return result
    consumer = AIOKafkaConsumer(
        **consumer_kwargs, group_id=None, enable_auto_commit=False,
        isolation_level="read_uncommitted", client_id="recstream-tansu-compat",
    )  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for atp, tp in wanted.items():
            consumer.seek(atp, reported[tp] - 1)
        pending = set(wanted)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            fetched = await consumer.getmany(*pending, timeout_ms=500)
            for atp, records in fetched.items():
                if records:
                    tp = wanted[atp]
                    result[tp] = max(result[tp], records[-1].offset + 1)
                    pending.discard(atp)
                    consumer.pause(atp)
        for atp in pending:
            # No record came back (e.g. the last batch is a transaction marker):
            # the fetch's high watermark is the best answer left.
            highwater = consumer.highwater(atp)
            tp = wanted[atp]
            if highwater is not None:
                result[tp] = max(result[tp], highwater)
            log.warning("tansu compat: no record fetched for %s at offset %d; using end offset %d",
                        atp, reported[tp] - 1, result[tp])  # fmt: skip
    finally:
        await consumer.stop()
    return result


class CorrectedHighwaters:
    """Stands in for ``consumer.highwaters``: the original answer, then corrected."""

    def __init__(self, original: Highwaters, consumer_kwargs: Mapping[str, Any]) -> None:
        self._original = original
        self._consumer_kwargs = dict(consumer_kwargs)

    async def __call__(self, *partitions: Any) -> Mapping[Any, int]:
        reported = await self._original(*partitions)
        corrected = await true_end_offsets(reported, self._consumer_kwargs)
        changed = {tp: (reported[tp], end) for tp, end in corrected.items() if end != reported[tp]}
        if changed:
            log.info(
                "tansu compat: corrected end offsets (reported -> true): %s",
                ", ".join(f"{tp[0]}[{tp[1]}] {a}->{b}" for tp, (a, b) in sorted(changed.items())),
            )
        return corrected


def install(app: faust.App, kafka: KafkaSettings) -> None:
    """Patch this app's consumer only (nothing global): corrected end offsets."""
    faust_internals.wrap_highwaters(
        app, lambda original: CorrectedHighwaters(original, kafka.aiokafka_kwargs())
    )
    log.warning(
        "tansu compat ACTIVE: changelog end offsets are taken from a fetch, not "
        "ListOffsets(latest) (docs/embedded-broker.md defect 1). Not for a real Kafka cluster."
    )
