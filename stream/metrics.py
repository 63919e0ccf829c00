"""Prometheus metrics of one worker, in their own registry (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from recstream.schemas.probes import ProbeServer

_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PREFIX = "recstream_worker_"
_VERSION = ("model_version",)


@dataclass
class WorkerMetrics:
    """Counters the agents update; one instance per worker process (or per test)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def _counter(self, name: str, text: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(_PREFIX + name, text, labels, registry=self.registry)

    def _gauge(self, name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(_PREFIX + name, text, labels, registry=self.registry)

    def _histogram(self, name: str, text: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(_PREFIX + name, text, buckets=buckets, registry=self.registry)

    def __post_init__(self) -> None:
        c, g = self._counter, self._gauge
        self.events_in = c("events_in", "events read from the source topics")
        self.applied = c("events_applied", "events applied to a user sequence")
        self.duplicates = c(
            "events_duplicate", "valid events not applied: redelivered, or older than a full window"
        )
        self.dlq = c("events_dlq", "events sent to the DLQ", ["reason"])
        self.dlq_repeats = c("dlq_repeats", "malformed records read again in the same consumer "
                             "generation (a hole's re-read, a redelivery): not dead-lettered twice")
        self.repartitioned = c(
            "events_repartitioned", "events whose record key did not place them on their user's "
            "partition")  # fmt: skip
        self.score_requests = c("score_requests", "score requests sent")
        self.stale_records = c("events_stale", "events records fetched before a rebalance, "
                               "dropped unacknowledged (fetched again from the committed offset)")
        self.offset_holes = c(
            "offset_holes", "source offsets that skipped the agent, by outcome: seek (re-read "
            "asked), filled (re-read worked), abandoned (given up after re-reads)", ["outcome"])
        self.users_deleted = c("users_deleted", "user-deletions records applied to the tables")
        self.state_errors = c("state_errors", "stored states that could not be decoded (reset)")
        self.batch_size = self._histogram(
            "batch_size", "events per processed batch", _BATCH_BUCKETS)
        self.batch_seconds = self._histogram(
            "batch_seconds", "time to process one batch, outputs acknowledged", _SECONDS_BUCKETS)
        self.ready = g("ready", "1 once partitions are assigned and tables recovered")
        self.broker_compat = g("broker_compat_active", "1 when the Tansu end-offset fix is active")
        # Online quality: HR@10 = hits/trials and NDCG@10 = ndcg_sum/trials over
        # any window by rate(); the gauges over the last ONLINE_WINDOW judgements.
        self.recommendations_in = c(
            "recommendations_in", "recommendations read back (online metric)", _VERSION)
        self.recommendations_bad = c(
            "recommendations_unusable", "recommendations that could not be read")
        self.online_trials = c(
            "online_trials", "recommendation lists judged against the next event", _VERSION)
        self.online_hits = c(
            "online_hits", "judged lists whose top 10 held the next item", _VERSION)
        self.online_ndcg_sum = c("online_ndcg_sum", "sum of NDCG@10 over judged lists", _VERSION)
        self.online_hr = g(
            "online_hr_at_10", "HR@10 over the last judgements of a version", _VERSION)
        self.online_ndcg = g(
            "online_ndcg_at_10", "NDCG@10 over the last judgements of a version", _VERSION)
        self.event_to_recommendation = self._histogram(
            "event_to_recommendation_seconds",
            "worker read of the trigger event to the worker reading its recommendation back",
            _LATENCY_BUCKETS)  # fmt: skip
        self.lag = g("consumer_lag", "records on the broker not yet read (fetch high watermark"
                     " - next offset)", ["topic", "partition"])  # fmt: skip
        self.table_keys = g("table_keys", "keys in a table on this worker (RocksDB's estimate "
                            "above 100k keys in a partition)", ["table"])  # fmt: skip

    def serve(self, port: int, live: Callable[[], bool]) -> ProbeServer:
        """/metrics, /healthz (``live``: the event loop answers) and /readyz (``ready``)."""
        return ProbeServer(self.registry, port, live=live, ready=self.is_ready)

    def is_ready(self) -> bool:
        return self.registry.get_sample_value(_PREFIX + "ready") == 1.0
