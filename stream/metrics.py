"""Prometheus metrics of one worker, in their own registry (no module-level state)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class WorkerMetrics:
    """Counters the agent updates; one instance per worker process (or per test)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        p = "recstream_worker_"
        self.events_in = Counter(p + "events_in", "events read from the source topics", registry=r)
        self.applied = Counter(
            p + "events_applied", "events applied to a user sequence", registry=r
        )
        self.duplicates = Counter(
            p + "events_duplicate",
            "valid events not applied: redelivered, or older than a full window",
            registry=r,
        )
        self.dlq = Counter(p + "events_dlq", "events sent to the DLQ", ["reason"], registry=r)
        self.repartitioned = Counter(
            p + "events_repartitioned",
            "events whose record key did not place them on their user's partition",
            registry=r,
        )
        self.score_requests = Counter(p + "score_requests", "score requests sent", registry=r)
        self.state_errors = Counter(
            p + "state_errors", "stored states that could not be decoded (reset)", registry=r
        )
        self.batch_size = Histogram(
            p + "batch_size", "events per processed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds",
            "time to process one batch, outputs acknowledged",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.ready = Gauge(
            p + "ready", "1 once partitions are assigned and tables recovered", registry=r
        )
        self.broker_compat = Gauge(
            p + "broker_compat_active", "1 when the Tansu end-offset fix is active", registry=r
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> MetricsServer:
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
