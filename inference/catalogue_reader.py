"""Reads the ``items`` topic into a :class:`~recstream.inference.catalogue.Catalogue`.

No consumer group: every reader sees every partition from the beginning (the
topic is compacted, so that is each item's newest state), commits nothing, and
converges on the topic like every other reader. :meth:`start` returns once the
records the topic held at that moment are applied, so a restarted scorer never
serves an item retired before it started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from recstream.inference.catalogue import Catalogue
from recstream.inference.topic_replay import CatchUp, TopicMissing, replay_from_start
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
        try:
            catch_up = CatchUp(await replay_from_start(self._consumer, [ITEMS], timeout_s))
        except TopicMissing:
            raise RuntimeError(f"topic {ITEMS!r} not found: create it (compacted; `recstream "
                               "broker` does) or set RECSTREAM_SCORER_CATALOGUE=0") from None
        while not catch_up.done:
            await self.poll(timeout_ms=200)
            await catch_up.check(self._consumer)
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
