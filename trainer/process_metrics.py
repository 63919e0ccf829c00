"""Prometheus metrics of one trainer process, in their own registry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class TrainerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        p = "recstream_trainer_"
        self.window_users = Gauge(p + "window_users", "users in the training window", registry=r)
        self.window_events = Gauge(p + "window_events", "events in the training window", registry=r)
        self.pending_events = Gauge(
            p + "pending_events", "window events no round has trained on yet", registry=r
        )
        self.events_consumed = Counter(
            p + "events_consumed", "records read from the events topic", registry=r
        )
        self.events_added = Counter(p + "events_added", "events stored in the window", registry=r)
        self.events_duplicate = Counter(
            p + "events_duplicate", "events dropped as redeliveries (same event_id)", registry=r
        )
        self.events_stale = Counter(
            p + "events_stale", "events too old for the window bounds", registry=r
        )
        self.events_malformed = Counter(
            p + "events_malformed", "invalid events skipped (the worker dead-letters them)",
            ["reason"], registry=r,
        )
        self.users_deleted = Counter(
            p + "users_deleted", "user-deletions records applied to the window", registry=r
        )
        self.lag = Gauge(p + "lag", "events on the topic not yet read by the trainer", registry=r)
        self.finetune_runs = Counter(
            p + "finetune_runs", "fine-tuning rounds finished, by outcome", ["outcome"], registry=r
        )
        self.last_loss = Gauge(p + "last_loss", "training loss of the last round's last epoch",
                               registry=r)
        self.round_seconds = Gauge(p + "round_seconds", "wall time of the last round", registry=r)
        self.validation = Gauge(
            p + "validation", "hold-out figures of the last round", ["model", "metric"], registry=r
        )
        self.published = Counter(p + "versions_published", "versions published", registry=r)
        self.rejected = Counter(
            p + "candidates_rejected", "candidates not published, by reason", ["reason"], registry=r
        )
        self._last_publish = time.time()
        self.since_publish = Gauge(
            p + "seconds_since_last_publish",
            "seconds since this process last published (or started)", registry=r,
        )
        self.since_publish.set_function(lambda: time.time() - self._last_publish)

    def mark_published(self) -> None:
        self.published.inc()
        self._last_publish = time.time()
