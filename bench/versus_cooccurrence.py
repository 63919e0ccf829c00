"""``recstream bench versus-cooccurrence``: our model against the scorer's fallback,
offline, on the demo's synthetic stream.

Why: the demo judges the sequence model online against co-occurrence, but in
one run the two serve different phases (co-occurrence first, on little data).
Here both see the same training events and are ranked on the same cases:

* the synthetic stream of ``recstream demo`` (``--events``, ``--users``,
  ``--items``, ``--seed``; the demo's defaults), item text = title and category;
* the one leave-one-out split (``../shared/data/README.md``), keeping only the
  validation and test cases whose target is new to the user: the scorer
  excludes a user's history, so a repeat can never be recommended online;
* co-occurrence (:mod:`inference.cooccurrence`, default settings) observes every
  user's training and validation events in time order, as the scorer would;
  ours trains to early stop on validation, with text and without.

Prints a table and writes ``{"rows": [{model, hr@10, ndcg@10, ...}], "cases",
"users", "repeat_share", "ours_over_cooccurrence_hr10", ...}`` with provenance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recstream.bench.jsonio import write_report


@dataclass(frozen=True)
class VersusOptions:
    json_out: Path
    events: int = 40_600  # what `recstream demo` replays at its defaults
    users: int = 2000
    items: int = 1000
    seed: int = 7
    max_epochs: int = 200
    patience: int = 5
    progress: bool = False
    #: ``StreamShape`` fields to change from the generator's defaults.
    shape: dict[str, float] = field(default_factory=dict)


def repeat_share(events: list[tuple[str, str]]) -> float:
    """Share of (user, item) events whose item the user already had."""
    seen: set[tuple[str, str]] = set()
    repeats = 0
    for pair in events:
        repeats += pair in seen
        seen.add(pair)
    return round(repeats / max(1, len(events)), 4)


def _cooccurrence_fn(split: Any) -> Any:
    """A score function for :func:`trainer.evaluate.evaluate` from co-occurrence
    fed the training and validation events of every user in time order."""
    import torch
    from recstream.inference.cooccurrence import CooccurrenceRecommender
    from recstream.schemas.messages import EVENT_TYPES, ScoreRequest

    ids, names = split.item_ids, ("view", *EVENT_TYPES)  # type index 0 is padding
    index = {item: i + 1 for i, item in enumerate(ids)}

    def request(user: str, items: list[int], ts: list[int], types: list[int]) -> ScoreRequest:
        return ScoreRequest(user_id=user, items=[ids[i - 1] for i in items], ts=list(ts),
                            event_types=[names[t] for t in types], trigger_event_id="bench",
                            trigger_ts=ts[-1], ingest_ms=0)  # fmt: skip

    cooc = CooccurrenceRecommender()
    known = sorted(((u.ts[-2], u) for u in split.users), key=lambda p: p[0])
    for _, u in known:  # in the order the last known event arrived
        cooc.observe([request(u.user, u.items[:-1], u.ts[:-1], u.types[:-1])])

    def score(cases: list[Any]) -> torch.Tensor:
        out = torch.full((len(cases), split.n_items + 1), -1e9)
        ranked = cooc.recommend([request(c.user, c.items, c.ts, c.types) for c in cases], 50)
        for r, items in enumerate(ranked):
            for rank, item in enumerate(items):
                out[r, index[item.item_id]] = 100.0 - rank
        return out

    return score


def run_versus(opts: VersusOptions) -> dict[str, Any]:
    """Generate, split, rank co-occurrence and ours; print and write the report."""
    from recstream.bench.synthetic_data import demo_interactions, new_item_cases
    from recstream.inference.model import ModelConfig
    from recstream.trainer.evaluate import evaluate
    from recstream.trainer.pipeline import fit
    from recstream.trainer.split import leave_one_out
    from recstream.trainer.train import TrainConfig

    from recstream.synthetic import StreamShape

    shape = StreamShape(**opts.shape)
    data, _ = demo_interactions(opts.events, opts.users, opts.items, opts.seed, opts.shape,
                                start_ms=None)
    split = leave_one_out(data)
    all_test = len(split.cases("test"))
    new_item_cases(split)
    rows = [{"model": "cooccurrence", **evaluate(_cooccurrence_fn(split), split, "test"),
             "train_seconds": 0.0}]  # fmt: skip
    for name, use_text in (("ours", True), ("ours-no-text", False)):
        cfg = ModelConfig(n_items=split.n_items, max_len=50, use_text=use_text)
        train = TrainConfig(max_epochs=opts.max_epochs, patience=opts.patience,
                            progress=opts.progress)  # fmt: skip
        started = time.monotonic()
        result, test = fit(data, split, cfg, train, None)
        rows.append({"model": name, **test, "train_seconds": round(time.monotonic() - started, 1),
                     **result.facts()})  # fmt: skip
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "stream_shape": asdict(shape),
        "users": len(split.users), "cases": len(split.cases("test")), "all_cases": all_test,
        "repeat_share": repeat_share([(e.user, e.item) for e in data.events]),
        "rows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                 for r in rows],
        "ours_over_cooccurrence_hr10": round(rows[1]["hr@10"] / rows[0]["hr@10"], 3),
    }  # fmt: skip
    for r in report["rows"]:
        print(f"{r['model']:<14} HR@10 {r['hr@10']:.4f}  NDCG@10 {r['ndcg@10']:.4f}  "
              f"train {r['train_seconds']} s")  # fmt: skip
    return write_report(opts.json_out, report)
