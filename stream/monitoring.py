"""Consumer lag per partition (each second) and table sizes (every 10 s), as gauges.

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
from faust.types import TP, TableT
from faust.types.tuples import Message
from recstream.stream.faust_internals import committed_offset, store_dbs
from recstream.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: Faust's own bookkeeping key in every table DB (the changelog offset).
FAUST_OFFSET_KEY = b"__faust\0offset__"

INTERVAL_S = 1.0


class OffsetSensor(Sensor):
    """Remembers the last offset read per topic partition (Faust calls it per message)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_read: dict[TP, int] = {}

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.last_read[tp] = offset


#: Above this many keys in one partition DB, count by RocksDB's estimate instead.
EXACT_COUNT_LIMIT = 100_000
#: Table sizes are refreshed this often (a count walks the keys).
TABLE_EVERY_S = 10.0


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


def install(
    app: faust.App, metrics: WorkerMetrics, topics: Iterable[str], tables: Iterable[TableT]
) -> OffsetSensor:
    """Add the offset sensor and the one-second timer to ``app``."""
    watched = set(topics)
    tables = list(tables)
    sensor = OffsetSensor()
    app.sensors.add(sensor)
    state = _State()

    @app.timer(INTERVAL_S, name="recstream.monitoring")
    async def monitor() -> None:
        try:
            _update(app, metrics, sensor, watched, tables, state)
        except Exception:  # noqa: BLE001 - monitoring must never stop the worker
            log.exception("monitoring update failed")

    return sensor


class _State:
    tables_at = float("-inf")
    #: The lag gauge's label sets, to drop those of partitions that moved away.
    lag_labels: set[tuple[str, str]] = set()


def _update(
    app: faust.App,
    metrics: WorkerMetrics,
    sensor: OffsetSensor,
    watched: set[str],
    tables: list[TableT],
    state: _State,
) -> None:
    assigned = [tp for tp in app.consumer.assignment() if tp.topic in watched]
    current = set()
    for tp in assigned:
        try:
            high = app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch answer for it yet
            continue
        if high is None:
            continue
        last = sensor.last_read.get(tp)
        if last is not None:
            lag = max(0, high - (last + 1))
        else:
            # Nothing read since the assignment: the group resumes at its
            # committed offset.
            committed = committed_offset(app, tp)
            lag = max(0, high - committed) if committed is not None else high
        metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        current.add((tp.topic, str(tp.partition)))
    # Partitions that moved to another worker are not this worker's lag any more.
    for labels in state.lag_labels - current:
        metrics.lag.remove(*labels)
    state.lag_labels = current
    if time.monotonic() - state.tables_at >= TABLE_EVERY_S:
        state.tables_at = time.monotonic()
        for table in tables:
            metrics.table_keys.labels(table.name).set(table_size(table))
