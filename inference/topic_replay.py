"""Reading whole topics from their start, without a consumer group.

The scorer's catalogue and the API's replica both rebuild state from topics
(compacted or retained) on every start: assign every partition, seek to the
beginning, and know when the records held at start have been applied, so that
nothing is served from a state older than the topics. One place for the three
steps, and for the wait on a topic just created whose metadata lags a moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


class TopicMissing(RuntimeError):
    """The broker does not know the topic (after waiting for its metadata)."""


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    """The topic's partitions, refreshing metadata for up to ``timeout_s``."""
    for _ in range(max(1, int(timeout_s * 10))):
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        await consumer._client.force_metadata_update()  # noqa: SLF001
        await asyncio.sleep(0.1)
    raise TopicMissing(topic)


async def replay_from_start(
    consumer: AIOKafkaConsumer, topics: Iterable[str], timeout_s: float
) -> dict[TopicPartition, int]:
    """Assign every partition of ``topics`` at its beginning; return the end offsets
    held now (what :class:`CatchUp` waits for)."""
    parts = [TopicPartition(t, p) for t in topics
             for p in sorted(await partitions_of(consumer, t, timeout_s))]  # fmt: skip
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    return await consumer.end_offsets(parts)


class CatchUp:
    """Tracks the partitions still short of the end offsets held at start."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.records_at_start = sum(ends.values())
        self._behind = {tp: end for tp, end in ends.items() if end > 0}

    @property
    def done(self) -> bool:
        return not self._behind

    async def check(self, consumer: AIOKafkaConsumer) -> bool:
        """True once every partition's position reached its end offset at start
        (by position: compaction and retention leave gaps in the offsets)."""
        for tp in list(self._behind):
            if await consumer.position(tp) >= self._behind[tp]:
                del self._behind[tp]
        return self.done
