"""The demo's continuous-training loop: the trainer child and the per-version figures.

The demo judges every list it receives the way the worker does online: for
each event it sends, the user's latest recommendation received before it (and
the ``model_version`` that scored it) is a hit if the event's item is in its
top 10, NDCG = 1 / log2(rank + 2). It also times the gaps in the stream of
recommendations around each version change (a swap must not stop it), reads
the trainer's gate decisions from its ``state.json`` and the scorer's swap and
refusal counters from its ``/metrics``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream import metrics_scrape
from recstream.schemas.messages import Recommendation

K = 10

#: Trainer settings sized for a 2-core machine shared with broker, worker and
#: scorer: a small model, short rounds, a round every ~20 s of replay.
TRAINER_ENV: dict[str, str] = {
    "RECSTREAM_TRAINER_EVERY_EVENTS": "4000",
    "RECSTREAM_TRAINER_EVERY_MINUTES": "0.5",
    "RECSTREAM_TRAINER_BUDGET_S": "20",
    "RECSTREAM_TRAINER_EPOCHS": "8",
    "RECSTREAM_TRAINER_LR": "0.003",
    "RECSTREAM_TRAINER_BATCH_SIZE": "64",
    "RECSTREAM_TRAINER_MAX_LEN": "30",
    "RECSTREAM_TRAINER_D_MODEL": "48",
    "RECSTREAM_TRAINER_LAYERS": "1",
    "RECSTREAM_TRAINER_HEADS": "2",
    "RECSTREAM_TRAINER_MIN_HOLDOUT": "20",
    "RECSTREAM_TRAINER_TOLERANCE": "0.01",
    "RECSTREAM_TRAINER_KEEP": "10",
    "RECSTREAM_TORCH_THREADS": "1",
    # The demo's scorer serves torch (explanations): an ONNX export per version
    # would only take the trainer's CPU from the 2 cores.
    "RECSTREAM_TRAINER_ONNX": "0",
}
#: The scorer serves the sequence model with eager torch so that every list
#: carries its explanation (attention rollout: a second forward pass).
SCORER_ENV: dict[str, str] = {
    "RECSTREAM_SCORER_BACKEND": "torch",
    "RECSTREAM_SCORER_EXPLAIN": "3",
    "RECSTREAM_TORCH_THREADS": "1",
}


def model_kind(version: str) -> str:
    """``cooccurrence`` for the online fallback, ``sequence`` for a trained version."""
    return "cooccurrence" if version.startswith("cooccurrence") else "sequence"


def write_item_texts(items: Mapping[str, Any], path: Path) -> Path:
    """The catalogue as the trainer reads it (``.jsonl``): title and category per item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item_id, item in items.items():
            text = f"{item.title}. {item.category}".strip(". ") if item.category else item.title
            f.write(json.dumps({"item_id": item_id, "text": text}) + "\n")
    return path


def precompute_text_embeddings(path: Path) -> float:
    """Embed the catalogue's texts once (MiniLM, cached on disk); seconds it took.

    The trainer embeds the items of each round's window with the same cache, so
    this warms the model files and the page cache; a re-run of the same
    catalogue reads the cache.
    """
    from recstream.inference.item_text import default_cache_dir, embed_texts
    from recstream.trainer.item_catalogue import load_item_texts

    started = time.monotonic()
    texts = load_item_texts(path)
    embed_texts(list(texts.values()), cache_dir=default_cache_dir())
    return time.monotonic() - started


@dataclass
class VersionFigures:
    version: str
    served_from_s: float
    judged: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    recommendations: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class VersionTally:
    """Online quality per served version, and the swaps seen in the recommendations."""

    t0: float = field(default_factory=time.time)
    versions: dict[str, VersionFigures] = field(default_factory=dict)
    #: (time s since t0, from version, to version, gap ms between the two lists)
    changes: list[tuple[float, str, str, float]] = field(default_factory=list)
    max_gap_ms: float = 0.0
    _last_version: str | None = None
    _last_at: float | None = None

    def received(self, rec: Recommendation, now_s: float, latency_ms: float | None) -> None:
        """A recommendation arrived at wall time ``now_s``."""
        v = self.versions.get(rec.model_version)
        if v is None:
            v = self.versions[rec.model_version] = VersionFigures(
                rec.model_version, round(now_s - self.t0, 1))
        v.recommendations += 1
        if latency_ms is not None:
            v.latencies_ms.append(latency_ms)
        if self._last_at is not None:
            gap = (now_s - self._last_at) * 1000
            self.max_gap_ms = max(self.max_gap_ms, gap)
            if self._last_version != rec.model_version and v.recommendations == 1:
                self.changes.append((round(now_s - self.t0, 1), self._last_version or "",
                                     rec.model_version, round(gap, 1)))
        self._last_version, self._last_at = rec.model_version, now_s

    def judge(self, item_id: str, latest: Recommendation | None) -> None:
        """Judge the user's latest list against the item of the event being sent."""
        if latest is None or not latest.items:
            return
        v = self.versions.get(latest.model_version)
        if v is None:
            return
        v.judged += 1
        top = [r.item_id for r in latest.items[:K]]
        if item_id in top:
            rank = top.index(item_id)
            v.hits += 1
            v.ndcg_sum += 1.0 / math.log2(rank + 2)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "version": v.version,
                "model": model_kind(v.version),
                "served_from_s": v.served_from_s,
                "online_hr10": round(v.hits / v.judged, 4) if v.judged else None,
                "online_ndcg10": round(v.ndcg_sum / v.judged, 4) if v.judged else None,
                "judged": v.judged,
                "recommendations": v.recommendations,
                "p99_ms": _p(v.latencies_ms, 0.99),
            }
            for v in sorted(self.versions.values(), key=lambda v: v.served_from_s)
        ]

    def by_model(self) -> dict[str, dict[str, Any]]:
        """Pooled HR@10 / NDCG@10 and latency per model kind (all its versions)."""
        out: dict[str, dict[str, Any]] = {}
        for kind in ("cooccurrence", "sequence"):
            vs = [v for v in self.versions.values() if model_kind(v.version) == kind]
            judged = sum(v.judged for v in vs)
            lat = [x for v in vs for x in v.latencies_ms]
            out[kind] = {
                "judged": judged,
                "online_hr10": round(sum(v.hits for v in vs) / judged, 4) if judged else None,
                "online_ndcg10": round(sum(v.ndcg_sum for v in vs) / judged, 4) if judged else None,
                "p50_ms": _p(lat, 0.5),
                "p99_ms": _p(lat, 0.99),
                "latency_samples": len(lat),
            }
        return out


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


class TrainerWatch:
    """Collects the trainer's round outcomes from its ``state.json`` (polled)."""

    def __init__(self, state_file: Path, t0: float) -> None:
        self.state_file = state_file
        self.t0 = t0
        self.rounds: dict[int, dict[str, Any]] = {}
        self.died: str | None = None

    def poll(self) -> None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        entries = [state.get("last_round"), *state.get("rejections", [])]
        for e in entries:
            if isinstance(e, dict) and "at_ms" in e:
                self.rounds[int(e["at_ms"])] = e

    def decisions(self) -> list[dict[str, Any]]:
        out = []
        for at_ms, e in sorted(self.rounds.items()):
            cand, cur = e.get("candidate") or {}, e.get("current") or {}
            out.append({
                "at_s": round(at_ms / 1000 - self.t0, 1),
                "round": e.get("round"),
                "published": bool(e.get("published")),
                "version": e.get("version"),
                "reason": e.get("reason"),
                "candidate_ndcg10": _round(cand.get("ndcg@10")),
                "current_ndcg10": _round(cur.get("ndcg@10")),
                "train_events": e.get("train_events"),
                "round_s": e.get("round_seconds"),
            })
        return out


def _round(x: Any) -> float | None:
    return round(float(x), 4) if isinstance(x, int | float) else None


def scrape_counters(url: str) -> dict[str, float]:
    """Sum of each ``*_total`` counter at a ``/metrics`` URL ({} if it does not answer)."""
    samples = metrics_scrape.fetch(url, timeout_s=3.0)
    return {} if samples is None else metrics_scrape.counters(samples)


def swap_figures(tally: VersionTally, scorer_counters: Mapping[str, float]) -> dict[str, Any]:
    """Swaps and refusals: the scorer's counters, and what the demo saw in the lists."""
    return {
        "swaps": int(scorer_counters.get("recstream_scorer_model_swaps_total",
                                         len(tally.changes))),
        "refused": int(scorer_counters.get("recstream_scorer_model_refused_total", 0)),
        "version_changes": [
            {"at_s": at, "from": a, "to": b, "gap_ms": gap} for at, a, b, gap in tally.changes
        ],
        "max_recommendation_gap_ms": round(tally.max_gap_ms, 1),
    }


def summary_keys(
    tally: VersionTally | None,
    watch: TrainerWatch | None,
    scorer_counters: Mapping[str, float],
) -> dict[str, Any]:
    """The summary's per-version part: versions, swaps, refusals, gate decisions, phases."""
    if tally is None:
        return {"versions": [], "swaps": 0, "refused": 0, "gate_decisions": [], "by_model": {}}
    rows = tally.rows()
    seq = [r for r in rows if r["model"] == "sequence"]
    by_model = tally.by_model()
    cooc_hr, seq_hr = by_model["cooccurrence"]["online_hr10"], by_model["sequence"]["online_hr10"]
    return {
        "versions": rows,
        **swap_figures(tally, scorer_counters),
        "gate_decisions": watch.decisions() if watch is not None else [],
        "trainer": None if watch is None else (watch.died or "ran to the end"),
        "first_sequence_served_s": seq[0]["served_from_s"] if seq else None,
        "sequence_versions_served": len(seq),
        "by_model": by_model,
        "hr10_ratio_sequence_vs_cooccurrence": (
            round(seq_hr / cooc_hr, 3) if seq_hr is not None and cooc_hr else None
        ),
    }


def print_versions(console: Any, summary: Mapping[str, Any]) -> None:
    """The per-version table, the swaps, and the trainer's gate decisions."""
    from rich.table import Table

    table = Table(title="served versions (online, judged by the demo against the next event)")
    for col in ("version", "model", "from (s)", "HR@10", "NDCG@10", "judged", "recs", "p99 ms"):
        table.add_column(col, justify="left" if col in ("version", "model") else "right",
                         no_wrap=col in ("version", "model"), min_width=len(col))
    for r in summary.get("versions", []):
        cells = [r["version"], r["model"], r["served_from_s"], r["online_hr10"],
                 r["online_ndcg10"], r["judged"], r["recommendations"], r["p99_ms"]]
        table.add_row(*("-" if c is None else str(c) for c in cells))
    console.print(table)
    for change in summary.get("version_changes", []):
        console.print(f"  swap at {change['at_s']}s: {change['from']} -> {change['to']} "
                      f"(gap between lists {change['gap_ms']} ms)")
    for d in summary.get("gate_decisions", []):
        verdict = f"published {d['version']}" if d["version"] else "not published"
        console.print(f"  trainer round {d['round']} at {d['at_s']}s: {verdict} ({d['reason']}; "
                      f"NDCG@10 candidate {d['candidate_ndcg10']} vs current "
                      f"{d['current_ndcg10']}, {d['train_events']} events, {d['round_s']}s)")
    ratio = summary.get("hr10_ratio_sequence_vs_cooccurrence")
    console.print(f"  swaps {summary.get('swaps', 0)}, refused {summary.get('refused', 0)}, "
                  f"longest gap between lists {summary.get('max_recommendation_gap_ms')} ms; "
                  f"HR@10 sequence / co-occurrence: {'-' if ratio is None else ratio}; "
                  f"trainer: {summary.get('trainer') or 'off'}")
