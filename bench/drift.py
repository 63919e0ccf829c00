"""Online HR@10 on a drifting stream: a continuously fine-tuned model vs a frozen one.

Protocol (prequential, "test then train"):

* a seeded synthetic stream (:mod:`recstream.synthetic`: users' interests drift
  from session to session; long-tail items keep turning up for the first time)
  in time order;
* one model is trained from scratch on the first ``warmup`` share of the stream
  (the trainer's own code path: window -> :func:`trainer.window_split.window_split`
  -> :func:`trainer.finetune.grow_model` -> :func:`trainer.finetune.finetune`);
  the *frozen* model is that model forever, the *fine-tuned* one starts as a copy;
* the rest of the stream is cut into ``n_chunks`` chunks. Each chunk is first
  scored by both models, then appended to the training window and the fine-tuned
  model is warm-started on the whole window (new items get rows) for a bounded
  number of epochs / seconds, exactly as ``recstream trainer`` does (no gate);
* scoring an event: the model ranks its whole catalogue given the user's history
  before the event (every earlier event of the user, warm-up included; the last
  ``max_len`` as input), history items excluded except the target, ties broken
  at random with a fixed seed (:func:`trainer.metrics.rank_targets`); a hit is a
  rank < 10. An event whose item the model has never seen, or whose user has no
  history the model knows, is a miss for that model. Users' first events are
  not scored (no history).

Figures are means over every scored event of the stream after the warm-up;
the ``*_known_items`` figures repeat them on the events whose item the frozen
model knows, which separates learning the drift from merely knowing new items.
Training is bounded by wall-clock seconds, so a busier machine trains less.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recstream.inference.model import SeqRecModel
    from recstream.schemas.messages import Event

K = 10


def run_drift(
    n_events: int = 20_000,
    n_users: int = 800,
    n_items: int = 500,
    n_chunks: int = 6,
    warmup: float = 0.3,
    drift: float = 0.3,
    seed: int = 0,
    max_len: int = 50,
    d_model: int = 32,
    warmup_epochs: int = 20,
    warmup_budget_s: float = 30.0,
    chunk_epochs: int = 2,
    chunk_budget_s: float = 6.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the protocol above; return ``online_hr10_finetuned``, ``online_hr10_frozen``
    and per-chunk figures. The defaults take about 2 minutes on 2 busy CPU cores."""
    import torch
    from recstream.inference.features import EVENT_TYPE_INDEX
    from recstream.inference.model import ModelConfig
    from recstream.trainer.finetune import finetune, grow_model
    from recstream.trainer.train import TrainConfig
    from recstream.trainer.window import TrainingWindow, WindowBounds
    from recstream.trainer.window_split import window_split

    from recstream.synthetic import StreamShape, generate

    start = time.monotonic()
    events = sorted(generate(n_events, n_users=n_users, n_items=n_items, seed=seed,
                             shape=StreamShape(drift=drift)).events, key=lambda e: e.ts)
    cut = int(len(events) * warmup)
    rest = events[cut:]
    size = -(-len(rest) // n_chunks)
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
    scratch = ModelConfig(n_items=1, max_len=max_len, d_model=d_model, n_heads=2, n_layers=2,
                          use_text=False)
    history: dict[str, list[tuple[str, int, int]]] = {}

    def remember(evs: Sequence[Event]) -> None:
        for e in evs:
            history.setdefault(e.user_id, []).append(
                (e.item_id, e.ts, EVENT_TYPE_INDEX[e.event_type]))

    def train(window: TrainingWindow, base: SeqRecModel | None, items: list[str],
              epochs: int, budget: float) -> tuple[SeqRecModel, list[str], float]:
        split = window_split(window.snapshot(), items, trained_seq=window.seq)  # no hold-out
        model = grow_model(base, split, scratch, None)
        result = finetune(model, split, TrainConfig(max_epochs=epochs, time_budget_s=budget,
                                                    lr=2e-3 if base is None else 1e-3,
                                                    seed=seed, progress=False))
        return result.model, split.item_ids, result.seconds

    rows = []
    gen = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="drift-window-") as tmp:
        window = TrainingWindow(Path(tmp), WindowBounds(max_events=max_len, max_age_days=365))
        try:
            window.apply(events[:cut])
            remember(events[:cut])
            frozen, frozen_items, warm_s = train(window, None, [], warmup_epochs, warmup_budget_s)
            tuned, tuned_items = copy.deepcopy(frozen), list(frozen_items)
            frozen_known = set(frozen_items)
            bar = _bar(progress, len(chunks))
            for n, chunk in enumerate(chunks, start=1):
                cases = []
                for e in chunk:  # prequential: each event against the history before it
                    past = history.get(e.user_id, [])
                    if past:
                        cases.append((past[-max_len:], [it for it, _, _ in past], e.item_id))
                    history.setdefault(e.user_id, []).append(
                        (e.item_id, e.ts, EVENT_TYPE_INDEX[e.event_type]))
                hits_tuned = _hits(tuned, tuned_items, cases, gen)
                hits_frozen = _hits(frozen, frozen_items, cases, gen)
                # How much of the gap is new items alone: events the frozen model could rank.
                old = [c[2] in frozen_known for c in cases]
                window.apply(chunk)
                before = len(tuned_items)
                tuned, tuned_items, secs = train(window, tuned, tuned_items, chunk_epochs,
                                                 chunk_budget_s)
                rows.append({"chunk": n, "events": len(chunk), "scored": len(cases),
                             "hits_finetuned": sum(hits_tuned), "hits_frozen": sum(hits_frozen),
                             "hr10_finetuned": _mean(hits_tuned), "hr10_frozen": _mean(hits_frozen),
                             "scored_known": sum(old),
                             "hits_finetuned_known": sum(h for h, k in zip(hits_tuned, old,
                                                                           strict=True) if k),
                             "hits_frozen_known": sum(h for h, k in zip(hits_frozen, old,
                                                                        strict=True) if k),
                             "new_items": len(tuned_items) - before,
                             "finetune_seconds": round(secs, 2)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(tuned=f"{rows[-1]['hr10_finetuned']:.3f}",
                                    frozen=f"{rows[-1]['hr10_frozen']:.3f}")
            if bar is not None:
                bar.close()
        finally:
            window.close()
    scored = sum(r["scored"] for r in rows)
    known = max(sum(r["scored_known"] for r in rows), 1)
    return {
        "online_hr10_finetuned": sum(r["hits_finetuned"] for r in rows) / max(scored, 1),
        "online_hr10_frozen": sum(r["hits_frozen"] for r in rows) / max(scored, 1),
        "scored_events": scored,
        # the same, on events whose item the frozen model knows (no new-item advantage)
        "online_hr10_finetuned_known_items": sum(r["hits_finetuned_known"] for r in rows) / known,
        "online_hr10_frozen_known_items": sum(r["hits_frozen_known"] for r in rows) / known,
        "scored_events_known_items": sum(r["scored_known"] for r in rows),
        "chunks": rows,
        "items_frozen": len(frozen_items),
        "items_finetuned": len(tuned_items),
        "warmup_train_seconds": round(warm_s, 1),
        "seconds": round(time.monotonic() - start, 1),
        "settings": {"n_events": n_events, "n_users": n_users, "n_items": n_items,
                     "n_chunks": n_chunks, "warmup": warmup, "drift": drift, "seed": seed,
                     "max_len": max_len, "d_model": d_model, "warmup_epochs": warmup_epochs,
                     "warmup_budget_s": warmup_budget_s, "chunk_epochs": chunk_epochs,
                     "chunk_budget_s": chunk_budget_s, "k": K},
        "protocol": __doc__.split("Protocol", 1)[1].strip() if __doc__ else "",
    }


def _hits(
    model: SeqRecModel,
    item_ids: list[str],
    cases: list[tuple[list[tuple[str, int, int]], list[str], str]],
    gen: Any,
    batch_size: int = 256,
) -> list[bool]:
    """Per case: is the target in the model's top-K (history excluded, target never)?"""
    import torch
    from recstream.trainer.evaluate import model_score_fn
    from recstream.trainer.metrics import rank_targets
    from recstream.trainer.split import EvalCase

    index = {it: i + 1 for i, it in enumerate(item_ids)}
    score = model_score_fn(model, batch_size)
    hits = [False] * len(cases)
    todo = []
    for c, (recent, seen, target) in enumerate(cases):
        known = [(index[it], ts, ty) for it, ts, ty in recent if it in index]
        if target in index and known:
            todo.append((c, EvalCase("", [k[0] for k in known], [k[1] for k in known],
                                     [k[2] for k in known], index[target]),
                         [index[it] for it in seen if it in index]))
    for s in range(0, len(todo), batch_size):
        batch = todo[s : s + batch_size]
        scores = score([case for _, case, _ in batch])
        exclude = torch.zeros(scores.shape, dtype=torch.bool)
        exclude[:, 0] = True
        for r, (_, _, seen) in enumerate(batch):
            exclude[r, seen] = True
        ranks = rank_targets(scores, torch.tensor([case.target for _, case, _ in batch]),
                             exclude, gen)
        for (c, _, _), rank in zip(batch, ranks.tolist(), strict=True):
            hits[c] = rank < K
    return hits


def _mean(xs: list[bool]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="drift chunks", unit="chunk", dynamic_ncols=True)
