"""Reads the ``items`` topic into a :class:`~recstream.inference.catalogue.Catalogue`.

No consumer group: every reader sees every partition from the beginning (the
topic is compacted, so that is each item's newest state), commits nothing, and
converges on the topic like every other reader. :meth:`start` returns once the
records the topic held at that moment are applied, so a restarted scorer never
serves an item retired before it started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from recstream.inference.catalogue import Catalogue
from recstream.schemas.topics import ITEMS

log = logging.getLogger(__name__)


class CatalogueReader:
    def __init__(self, kafka: Mapping[str, Any], catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or Catalogue()
        self._kafka = dict(kafka)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        # Built here, not in __init__: one never started is reported unclosed at exit.
        self._consumer = AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=50,
                                          **self._kafka)  # fmt: skip
        await self._consumer.start()
        parts: set[int] | None = None
        for _ in range(int(timeout_s * 10)):  # a topic just created may lag in metadata
            parts = self._consumer.partitions_for_topic(ITEMS)
            if parts:
                break
            await self._consumer._client.force_metadata_update()  # noqa: SLF001
            await asyncio.sleep(0.1)
        if not parts:
            raise RuntimeError(f"topic {ITEMS!r} not found: create it (compacted; `recstream "
                               "broker` does) or set RECSTREAM_SCORER_CATALOGUE=0")
        tps = [TopicPartition(ITEMS, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        behind = {tp: end for tp, end in ends.items() if end > 0}
        while behind:
            await self.poll(timeout_ms=200)
            for tp in list(behind):
                if await self._consumer.position(tp) >= behind[tp]:
                    del behind[tp]
        log.info("catalogue: %d items, %d unavailable, after %d records",
                 len(self.catalogue.items), len(self.catalogue.unavailable(0)),
                 self.catalogue.applied)  # fmt: skip

    async def poll(self, timeout_ms: int = 0) -> int:
        """Apply what has arrived (waiting at most ``timeout_ms``); return how many."""
        assert self._consumer is not None, "start() first"
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        n = 0
        for records in fetched.values():
            for record in records:
                self.catalogue.apply_raw(record.value)
            n += len(records)
        return n

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
