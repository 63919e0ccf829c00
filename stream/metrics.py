"""Prometheus metrics of one worker, in their own registry (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from recstream.schemas.probes import ProbeServer

_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        self.dlq_repeats = Counter(
            p + "dlq_repeats",
            "malformed records read again in the same consumer generation (a hole's"
            " re-read, a redelivery): not dead-lettered twice",
            registry=r,
        )
        self.repartitioned = Counter(
            p + "events_repartitioned",
            "events whose record key did not place them on their user's partition",
            registry=r,
        )
        self.score_requests = Counter(p + "score_requests", "score requests sent", registry=r)
        self.stale_records = Counter(
            p + "events_stale",
            "events records fetched before a rebalance, dropped unacknowledged"
            " (fetched again from the committed offset)",
            registry=r,
        )
        self.offset_holes = Counter(
            p + "offset_holes",
            "source offsets that skipped the agent, by outcome: seek (re-read asked),"
            " filled (re-read worked), abandoned (given up after re-reads)",
            ["outcome"],
            registry=r,
        )
        self.users_deleted = Counter(
            p + "users_deleted", "user-deletions records applied to the tables", registry=r
        )
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
        self._online_and_monitoring(r, p)

    def _online_and_monitoring(self, r: CollectorRegistry, p: str) -> None:
        # Online quality: HR@10 = hits/trials and NDCG@10 = ndcg_sum/trials over
        # any window by rate(); the gauges over the last ONLINE_WINDOW judgements.
        v = ["model_version"]
        self.recommendations_in = Counter(
            p + "recommendations_in", "recommendations read back (online metric)", v, registry=r
        )
        self.recommendations_bad = Counter(
            p + "recommendations_unusable", "recommendations that could not be read", registry=r
        )
        self.online_trials = Counter(
            p + "online_trials", "recommendation lists judged against the next event", v, registry=r
        )
        self.online_hits = Counter(
            p + "online_hits", "judged lists whose top 10 held the next item", v, registry=r
        )
        self.online_ndcg_sum = Counter(
            p + "online_ndcg_sum", "sum of NDCG@10 over judged lists", v, registry=r
        )
        self.online_hr = Gauge(
            p + "online_hr_at_10", "HR@10 over the last judgements of a version", v, registry=r
        )
        self.online_ndcg = Gauge(
            p + "online_ndcg_at_10", "NDCG@10 over the last judgements of a version", v, registry=r
        )
        self.event_to_recommendation = Histogram(
            p + "event_to_recommendation_seconds",
            "worker read of the trigger event to the worker reading its recommendation back",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            p + "consumer_lag",
            "records on the broker not yet read (fetch high watermark - next offset)",
            ["topic", "partition"],
            registry=r,
        )
        self.table_keys = Gauge(
            p + "table_keys",
            "keys in a table on this worker (RocksDB estimate)",
            ["table"],
            registry=r,
        )

    def serve(self, port: int, live: Callable[[], bool]) -> ProbeServer:
        """/metrics, /healthz (``live``: the event loop answers) and /readyz (``ready``)."""
        return ProbeServer(self.registry, port, live=live, ready=self.is_ready)

    def is_ready(self) -> bool:
        return self.registry.get_sample_value("recstream_worker_ready") == 1.0
