"""Read the processes' Prometheus endpoints and boil them down to the dashboard's figures.

Used by the dashboard (and through it by ``recstream top``). A process that
does not answer is reported as down, never as zeros.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: (metric name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fetch(url: str, timeout_s: float = 2.0) -> Samples | None:
    """Samples of ``url`` (a base URL or a full /metrics URL), None when it does not answer."""
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return parse(response.read().decode())
    except (OSError, ValueError):
        return None


def value(url: str, name: str) -> float | None:
    """One metric's value at ``url`` (summed over its labels); None when it does not answer."""
    samples = fetch(url)
    return None if samples is None else total(samples, name)


def flat(samples: Samples) -> dict[str, float]:
    """The samples by name, labels folded into it (``name{k="v",...}``, sorted by label)."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        folded = ",".join(f'{k}="{v}"' for k, v in labels)
        out[f"{name}{{{folded}}}" if folded else name] = value
    return out


def counters(samples: Samples) -> dict[str, float]:
    """Each ``*_total`` counter summed over its labels."""
    out: dict[str, float] = defaultdict(float)
    for (name, _), value in samples.items():
        if name.endswith("_total"):
            out[name] += value
    return dict(out)


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels).get(label, "")] += v
    return dict(out)


def histogram_quantile(now: Samples, before: Samples | None, name: str, q: float) -> float | None:
    """Prometheus-style quantile of the observations between two scrapes (linear in a bucket)."""
    buckets: dict[float, float] = defaultdict(float)
    for (n, labels), v in now.items():
        if n == name + "_bucket":
            le = float(dict(labels)["le"])
            old = before.get((n, labels), 0.0) if before else 0.0
            buckets[le] += v - old
    if not buckets:
        return None
    edges = sorted(buckets)
    count = buckets[edges[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower_edge, lower_count = 0.0, 0.0
    for edge in edges:
        if buckets[edge] >= rank:
            if edge == float("inf"):
                return lower_edge
            width = buckets[edge] - lower_count
            frac = (rank - lower_count) / width if width > 0 else 0.0
            return lower_edge + (edge - lower_edge) * frac
        lower_edge, lower_count = edge, buckets[edge]
    return lower_edge


@dataclass
class Scrape:
    t: float
    worker: Samples | None
    scorer: Samples | None


class MetricsView:
    """Successive scrapes of the worker(s) and scorer(s), summed, to figures and rates."""

    def __init__(self, worker_urls: Iterable[str] = (), scorer_urls: Iterable[str] = ()) -> None:
        self.worker_urls = list(worker_urls)
        self.scorer_urls = list(scorer_urls)
        self._previous: Scrape | None = None

    @property
    def configured(self) -> bool:
        return bool(self.worker_urls or self.scorer_urls)

    def poll(self) -> dict[str, Any]:
        """Scrape every endpoint once (blocking) and return the figures."""
        scrape = Scrape(time.time(), _merged(self.worker_urls), _merged(self.scorer_urls))
        figures = summarize(scrape, self._previous)
        self._previous = scrape
        return figures


def _merged(urls: list[str]) -> Samples | None:
    """Samples of several processes of one kind, summed; None when none answered."""
    merged: Samples = defaultdict(float)
    answered = False
    for url in urls:
        samples = fetch(url)
        if samples is None:
            continue
        answered = True
        for key, v in samples.items():
            merged[key] += v
    return dict(merged) if answered else None


def summarize(now: Scrape, before: Scrape | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "worker_up": now.worker is not None,
        "scorer_up": now.scorer is not None,
    }
    w, s = now.worker, now.scorer
    if w is not None:
        out["worker_ready"] = total(w, "recstream_worker_ready") >= 1
        lag = {
            f"{dict(labels)['topic']}[{dict(labels)['partition']}]": v
            for (n, labels), v in w.items()
            if n == "recstream_worker_consumer_lag"
        }
        out["lag"] = dict(sorted(lag.items()))
        out["lag_total"] = sum(lag.values())
        out["table_keys"] = by_label(w, "recstream_worker_table_keys", "table")
        trials = by_label(w, "recstream_worker_online_trials_total", "model_version")
        hits = by_label(w, "recstream_worker_online_hits_total", "model_version")
        ndcg_sum = by_label(w, "recstream_worker_online_ndcg_sum_total", "model_version")
        rolling_hr = by_label(w, "recstream_worker_online_hr_at_10", "model_version")
        rolling_ndcg = by_label(w, "recstream_worker_online_ndcg_at_10", "model_version")
        out["online"] = {
            v: {
                "trials": n,
                "hits": hits.get(v, 0.0),
                "hr_at_10": hits.get(v, 0.0) / n if n else None,
                "ndcg_at_10": ndcg_sum.get(v, 0.0) / n if n else None,
                "rolling_hr_at_10": rolling_hr.get(v),
                "rolling_ndcg_at_10": rolling_ndcg.get(v),
            }
            for v, n in sorted(trials.items())
        }
        out["worker_dlq_by_reason"] = by_label(w, "recstream_worker_events_dlq_total", "reason")
        before_w = before.worker if before else None
        loop_p50 = histogram_quantile(
            w, before_w, "recstream_worker_event_to_recommendation_seconds", 0.5
        )
        loop_p99 = histogram_quantile(
            w, before_w, "recstream_worker_event_to_recommendation_seconds", 0.99
        )
        out["loop_ms"] = {
            "p50": None if loop_p50 is None else round(loop_p50 * 1000, 1),
            "p99": None if loop_p99 is None else round(loop_p99 * 1000, 1),
        }
        if before_w is not None and now.t > before.t:  # type: ignore[union-attr]
            dt = now.t - before.t  # type: ignore[union-attr]
            out["worker_events_per_s"] = round(
                (
                    total(w, "recstream_worker_events_in_total")
                    - total(before_w, "recstream_worker_events_in_total")
                )
                / dt,
                1,
            )
    if s is not None:
        out["scorer_ready"] = total(s, "recstream_scorer_ready") >= 1
        versions = [
            dict(labels).get("model_version", "")
            for (n, labels), v in s.items()
            if n == "recstream_scorer_model_info" and v >= 1
        ]
        out["model_version"] = versions[0] if versions else None
        # Since publication where the scorer follows a registry (hot swap), else
        # since this scorer loaded it.
        published_age = [v for (n, _), v in s.items() if n == "recstream_scorer_model_age_seconds"]
        loaded = total(s, "recstream_scorer_model_loaded_timestamp_seconds")
        if published_age and published_age[0] > 0:
            out["model_age_s"] = round(published_age[0], 1)
        else:
            out["model_age_s"] = round(now.t - loaded, 1) if loaded > 0 else None
        out["swaps"] = {
            n.removeprefix("recstream_scorer_").removesuffix("_total"): v
            for (n, _labels), v in s.items()
            if "swap" in n and n.endswith("_total")
        }
        before_s = before.scorer if before else None
        count = total(s, "recstream_scorer_batch_size_count") - (
            total(before_s, "recstream_scorer_batch_size_count") if before_s else 0
        )
        users = total(s, "recstream_scorer_batch_size_sum") - (
            total(before_s, "recstream_scorer_batch_size_sum") if before_s else 0
        )
        out["scorer_batch_mean"] = round(users / count, 1) if count > 0 else None
        for key, name in (
            ("scorer_batch_ms", "recstream_scorer_batch_seconds"),
            ("scorer_ingest_to_emit_ms", "recstream_scorer_ingest_to_emit_seconds"),
        ):
            p50 = histogram_quantile(s, before_s, name, 0.5)
            p99 = histogram_quantile(s, before_s, name, 0.99)
            out[key] = {
                "p50": None if p50 is None else round(p50 * 1000, 1),
                "p99": None if p99 is None else round(p99 * 1000, 1),
            }
    return out
