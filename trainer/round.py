"""One fine-tuning round: snapshot the window, warm-start, train, gate, publish.

Plain values in, a :class:`RoundResult` out; the Kafka loop
(:mod:`trainer.continuous`) decides when to call it, announces what it
published and moves the trained watermark.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.inference.model import ModelConfig
from recstream.inference.model_dir import load_model_dir
from recstream.inference.registry import Registry, VersionInfo
from recstream.trainer.evaluate import evaluate, model_score_fn
from recstream.trainer.finetune import finetune, grow_model
from recstream.trainer.gate import GateDecision, decide
from recstream.trainer.item_catalogue import text_rows
from recstream.trainer.pipeline import remapped_score_fn
from recstream.trainer.publish import publish_version
from recstream.trainer.train import TrainConfig
from recstream.trainer.window import TrainingWindow
from recstream.trainer.window_split import WindowSplit, window_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOptions:
    train: TrainConfig
    #: shape of a model trained from scratch (``n_items`` is replaced)
    scratch: ModelConfig
    tolerance: float = 0.005
    min_holdout: int = 20
    onnx: bool = True
    fp16: bool = False
    texts: Mapping[str, str] | None = None  # item_id -> text; None: zero text vectors
    cache_dir: Path | None = None


@dataclass
class RoundResult:
    decision: GateDecision
    upto_seq: int
    #: False when nothing could be trained: the same events wait for the next round
    advance: bool = True
    published: VersionInfo | None = None
    parent: str | None = None
    candidate: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    loss: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def run_round(
    window: TrainingWindow,
    registry: Registry,
    opts: RoundOptions,
    upto_seq: int,
    trained_seq: int,
    stop: threading.Event | None = None,
    round_no: int = 0,
) -> RoundResult:
    """Train a candidate on the window's events up to ``upto_seq`` and maybe publish it."""
    start = time.monotonic()
    cur_info = registry.current()
    current = load_model_dir(cur_info.path) if cur_info is not None else None
    split = window_split(window.snapshot(upto_seq), current.item_ids if current else [],
                         trained_seq)
    facts: dict[str, Any] = {
        "round": round_no, "upto_seq": upto_seq, "users": len(split.users),
        "train_events": split.n_train_events, "items": split.n_items,
        "new_items": split.new_items, "holdout_users": len(split.held_out),
    }
    if split.n_train_events - len(split.users) < 1:
        return RoundResult(GateDecision(False, "too_little_data",
                                        f"no training positions in {facts['users']} users"),
                           upto_seq, advance=False, facts=facts)
    new_ids = split.item_ids[len(current.item_ids) if current else 0 :]
    base = current.model if current else None
    use_text = base.cfg.use_text if base else opts.scratch.use_text
    table = text_rows(new_ids, opts.texts or {}, opts.cache_dir) if use_text else None
    model = grow_model(base, split, opts.scratch, table)
    log.info("round %d: %s from %s on %d users, %d events, %d items (%d new), %d held out",
             round_no, "fine-tuning" if current else "training from scratch",
             current.version if current else "nothing", facts["users"], facts["train_events"],
             split.n_items, split.new_items, facts["holdout_users"])
    result = finetune(model, split, opts.train, stop)
    t_eval = time.monotonic()
    cand_m, cur_m = _holdout_metrics(split, result.model, current, opts.train.seed)
    decision = decide(cand_m, cur_m, tolerance=opts.tolerance, n_cases=len(split.held_out),
                      min_cases=opts.min_holdout, loss=result.last_loss,
                      has_current=current is not None)
    facts.update(epochs=result.epochs, steps=result.steps, train_seconds=round(result.seconds, 2),
                 eval_seconds=round(time.monotonic() - t_eval, 2))
    out = RoundResult(decision, upto_seq, parent=current.version if current else None,
                      candidate=cand_m, current=cur_m, loss=result.last_loss, facts=facts)
    if decision.publish:
        metrics = {
            "holdout": cand_m, "holdout_current": cur_m, "parent": out.parent,
            "gate": {"reason": decision.reason, "detail": decision.detail,
                     "tolerance": opts.tolerance},
            "finetune": {"loss": result.last_loss, "epochs": result.epochs,
                         "steps": result.steps, "seconds": round(result.seconds, 2),
                         "warm_start": current is not None},
            "window": facts,
        }
        t_pub = time.monotonic()
        out.published = publish_version(registry, result.model, split.item_ids, metrics,
                                        onnx=opts.onnx, fp16=opts.fp16)
        facts["publish_seconds"] = round(time.monotonic() - t_pub, 2)
    facts["round_seconds"] = round(time.monotonic() - start, 2)
    return out


def _holdout_metrics(
    split: WindowSplit, candidate: Any, current: Any, seed: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Candidate's and current's figures on the hold-out (None without cases)."""
    if not split.held_out:
        return None, None
    cand = dict(evaluate(model_score_fn(candidate), split, "test", seed=seed))
    if current is None:
        return cand, None
    fn = remapped_score_fn(model_score_fn(current.model), current.item_ids, split)
    return cand, dict(evaluate(fn, split, "test", seed=seed))
