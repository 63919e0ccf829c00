"""Readiness, consumer lag per partition (each second) and table sizes (every 10 s).

Lag is the fetch high watermark (right on Tansu too, unlike ListOffsets:
docs/embedded-broker.md, defect 1) minus the next offset this worker will read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from faust.sensors import Sensor
from faust.types import TP, AppT, TableT
from faust.types.tuples import Message
from recstream.stream.faust_internals import committed_offset, store_dbs
from recstream.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: Faust's own bookkeeping key in every table DB (the changelog offset).
FAUST_OFFSET_KEY = b"__faust\0offset__"
INTERVAL_S = 1.0
#: Table sizes are refreshed this often (a count walks the keys).
TABLE_EVERY_S = 10.0
#: Above this many keys in one partition DB, count by RocksDB's estimate instead.
EXACT_COUNT_LIMIT = 100_000


def table_size(table: TableT) -> int:
    """Keys held by this worker for ``table``: counted exactly while a partition is
    small, as RocksDB's estimate counts every write still in the memtable."""
    return sum(_db_keys(db) for db in store_dbs(table))


def _db_keys(db: Any) -> int:
    try:
        n = 0
        for key in db.keys():
            if key != FAUST_OFFSET_KEY:
                n += 1
            if n > EXACT_COUNT_LIMIT:
                return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        return n
    except Exception:  # noqa: BLE001 - a DB closed by a rebalance: not ours now
        return 0


class Monitor(Sensor):
    """Faust calls it per message and at each rebalance; :func:`install` adds the timer."""

    def __init__(
        self, app: faust.App, metrics: WorkerMetrics, topics: Iterable[str],
        tables: Iterable[TableT], **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self._app, self._metrics = app, metrics
        self._topics, self._tables = set(topics), list(tables)
        self.last_read: dict[TP, int] = {}  # the last offset read per partition
        self._lag_labels: set[tuple[str, str]] = set()  # to drop partitions moved away
        self._tables_at = float("-inf")

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.last_read[tp] = offset

    def on_rebalance_start(self, app: AppT) -> dict[str, Any]:
        self._metrics.ready.set(0)
        return {}

    def on_rebalance_end(self, app: AppT, state: dict[str, Any]) -> None:
        self._metrics.ready.set(1)  # partitions assigned, tables recovered
        log.info("worker ready: partitions assigned, tables recovered")

    def update(self) -> None:
        app, metrics, current = self._app, self._metrics, set()
        for tp in app.consumer.assignment():
            if tp.topic not in self._topics:
                continue
            try:
                high = app.consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch answer for it yet
                continue
            if high is None:
                continue
            last = self.last_read.get(tp)
            if last is not None:
                lag = max(0, high - (last + 1))
            else:  # nothing read since the assignment: the group resumes at its commit
                committed = committed_offset(app, tp)
                lag = max(0, high - committed) if committed is not None else high
            metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
            current.add((tp.topic, str(tp.partition)))
        for labels in self._lag_labels - current:
            metrics.lag.remove(*labels)
        self._lag_labels = current
        if time.monotonic() - self._tables_at >= TABLE_EVERY_S:
            self._tables_at = time.monotonic()
            for table in self._tables:
                metrics.table_keys.labels(table.name).set(table_size(table))


def install(
    app: faust.App, metrics: WorkerMetrics, topics: Iterable[str], tables: Iterable[TableT]
) -> Monitor:
    """Add the monitor (readiness, the lag of ``topics``, the sizes of ``tables``) and
    its one-second timer to ``app``."""
    monitor = Monitor(app, metrics, topics, tables)
    app.sensors.add(monitor)

    @app.timer(INTERVAL_S, name="recstream.monitoring")
    async def tick() -> None:
        try:
            monitor.update()
        except Exception:  # noqa: BLE001 - monitoring must never stop the worker
            log.exception("monitoring update failed")

    return monitor
