"""Online quality, the Faust glue: the ``last_recommendations`` table and its agent.

The worker reads ``recommendations`` back (keyed by user, co-partitioned with
``events``). The agent keeps the newest list per user; the events agent calls
:meth:`OnlineQuality.on_applied` with each user's applied events, which judges
the stored list against the first of them and then forgets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import faust
from faust.types import AgentT, EventT, StreamT, TableT
from recstream.schemas import Event
from recstream.schemas import topics as names
from recstream.schemas.messages import now_ms
from recstream.stream.faust_internals import table_partition
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import HoleWatch
from recstream.stream.online_quality import (
    K,
    LastRecommendation,
    RollingQuality,
    judge,
    parse_recommendation,
)
from recstream.stream.tables import changelog_sends, define_table, delivered, read_value
from recstream.stream.topics import raw_topic

log = logging.getLogger(__name__)

LAST_RECOMMENDATIONS = "last_recommendations"
#: Judgements per model version behind the rolling HR/NDCG gauges.
ONLINE_WINDOW = 1000


def define_last_recommendations_table(app: faust.App, partitions: int, memory_mb: int) -> TableT:
    """User id (utf-8 bytes) -> :meth:`LastRecommendation.encode` bytes."""
    return define_table(app, LAST_RECOMMENDATIONS, partitions, memory_mb)


class OnlineQuality:
    """Keeps the last list per user and judges it against the user's next event."""

    def __init__(self, table: TableT, metrics: WorkerMetrics) -> None:
        self._table = table
        self._metrics = metrics
        self._rolling = RollingQuality(ONLINE_WINDOW)

    async def remember(self, batch: Sequence[EventT]) -> None:
        """Store the newest list of each user in a batch of ``recommendations`` records."""
        now, m = now_ms(), self._metrics
        with changelog_sends() as sends:
            for record in batch:
                self._remember(record, now, m)
        await delivered(sends)

    def _remember(self, record: EventT, now: int, m: WorkerMetrics) -> None:
        try:
            parsed = parse_recommendation(record.message.value, K)
        except ValueError as exc:  # the scorer's topic, not ours to dead-letter
            m.recommendations_bad.inc()
            log.debug("unusable recommendation at offset %d: %s", record.message.offset, exc)
            return
        m.recommendations_in.labels(parsed.last.model_version).inc()
        m.event_to_recommendation.observe(max(0, now - parsed.ingest_ms) / 1000)
        key = parsed.user_id.encode()
        with table_partition(record):
            old = self._load(self._table.get(key))
            if parsed.last.newer_than(old):
                self._table[key] = parsed.last.encode()

    def on_applied(self, user_key: bytes, events: Sequence[Event]) -> None:
        """Judge the user's stored list against the first later event; call under the
        user's ``table_partition``."""
        raw = read_value(self._table, user_key)
        if raw is None:
            return
        last = self._load(raw)
        for event in events:
            verdict = judge(last, event.event_id, event.item_id, event.ts, K)
            if verdict is None:
                continue
            m = self._metrics
            version = verdict.model_version
            m.online_trials.labels(version).inc()
            m.online_hits.labels(version).inc(1 if verdict.hit else 0)
            m.online_ndcg_sum.labels(version).inc(verdict.ndcg)
            hr, ndcg = self._rolling.add(verdict)
            m.online_hr.labels(version).set(hr)
            m.online_ndcg.labels(version).set(ndcg)
            # Judged once: the next list the scorer sends replaces it.
            del self._table[user_key]
            return

    @staticmethod
    def _load(raw: bytes | None) -> LastRecommendation | None:
        if raw is None:
            return None
        try:
            return LastRecommendation.decode(raw)
        except (ValueError, TypeError):
            return None  # an unreadable entry is simply replaced


def define_recommendations_agent(
    app: faust.App, partitions: int, online: OnlineQuality, *, batch_size: int,
    batch_window_s: float, on_fatal: Callable[[BaseException], None], holes: HoleWatch,
) -> AgentT:  # fmt: skip
    topic = raw_topic(app, names.RECOMMENDATIONS, partitions=partitions)

    async def remember_recommendations(stream: StreamT) -> None:
        # A batch is acknowledged once remember() returned; a failure stops the
        # worker uncommitted.
        async for batch in stream.take_events(batch_size, within=batch_window_s):
            try:
                for record in batch:  # (a repeat is remembered again: harmless)
                    hole = holes.check(record.message)
                    if not isinstance(hole, bool):
                        await hole
                await online.remember(batch)
            except Exception as exc:
                on_fatal(exc)
                raise

    return app.agent(topic, name="recstream.remember_recommendations")(remember_recommendations)
