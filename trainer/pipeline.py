"""End-to-end jobs behind the CLI: train a version directory, evaluate one.

Plain functions taking plain values (paths, configs); the CLI reads flags and
the environment and calls these.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from recstream.inference.item_text import TEXT_DIM, embed_texts
from recstream.inference.model import ModelConfig
from recstream.inference.model_dir import load_model_dir, save_model_dir
from recstream.inference.model_dir import sha256_file as file_sha256  # noqa: F401 - used by bench
from recstream.trainer.data import Interactions, load_interactions
from recstream.trainer.evaluate import PROTOCOL, ScoreFn, evaluate, model_score_fn
from recstream.trainer.split import EvalCase, Split, leave_one_out
from recstream.trainer.train import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


def item_text_table(
    split: Split, texts: dict[str, str], cache_dir: Path | None, progress: bool = False
) -> torch.Tensor:
    """[n_items + 1, 384] text embeddings in model-index order; zero rows for
    padding and for items without text."""
    table = torch.zeros(split.n_items + 1, TEXT_DIM)
    have = [(i + 1, texts[item]) for i, item in enumerate(split.item_ids) if item in texts]
    if have:
        emb = embed_texts([t for _, t in have], cache_dir=cache_dir, progress=progress)
        table[[i for i, _ in have]] = emb
    return table


def resolve_text(data: Interactions, text: str) -> bool:
    """``text``: "auto" (use it when the data has item texts), "on" or "off"."""
    if text not in ("auto", "on", "off"):
        raise ValueError(f"text must be auto, on or off, got {text!r}")
    if text == "on" and not data.item_text:
        raise ValueError(f"{data.name} has no item texts (no .item file); use text 'off'")
    return text == "on" or (text == "auto" and bool(data.item_text))


def fit(
    data: Interactions,
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    cache_dir: Path | None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Train, then evaluate on the test targets exactly once."""
    table = None
    if model_cfg.use_text:
        table = item_text_table(split, data.item_text, cache_dir, progress=train_cfg.progress)
    result = train(split, model_cfg, train_cfg, text_table=table)
    test = evaluate(model_score_fn(result.model), split, "test", seed=train_cfg.seed)
    return result, test


def run_train(
    data_path: Path,
    out: Path,
    model_overrides: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    text: str = "auto",
    cache_dir: Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Load, split, train with early stopping on validation, test once, publish ``out``."""
    train_cfg = train_cfg or TrainConfig()
    data = load_interactions(data_path)
    split = leave_one_out(data)
    overrides = dict(model_overrides or {})
    overrides.setdefault("use_text", resolve_text(data, text))
    model_cfg = ModelConfig(n_items=split.n_items, **overrides).validate()
    result, test = fit(data, split, model_cfg, train_cfg, cache_dir)
    metrics = {
        "valid": result.valid,
        "test": test,
        **result.facts(),
        "history": result.history,
        "data": {"path": str(data_path), "name": data.name, "users": len(split.users),
                 "items": split.n_items, "events": len(data.events),
                 "dropped_users": split.dropped_users, "has_time": data.has_time},
        "protocol": PROTOCOL,
        "train_config": vars(train_cfg),
    }
    version = save_model_dir(out, result.model, split.item_ids, metrics, overwrite=overwrite)
    return {"version": version, "out": str(out), "valid": result.valid, "test": test,
            **result.facts()}


def remapped_score_fn(model_fn: ScoreFn, model_items: list[str], split: Split) -> ScoreFn:
    """Adapt a model's scores to ``split``'s catalogue (by raw item id).

    Cases are translated into the model's indices (items it does not know are
    dropped from the history); catalogue items the model does not know score
    ``-inf`` and so rank last, ties broken like any other.
    """
    if model_items == split.item_ids:
        return model_fn
    model_index = {it: i + 1 for i, it in enumerate(model_items)}
    to_model = torch.tensor([0] + [model_index.get(it, 0) for it in split.item_ids])
    to_split = {i + 1: model_index.get(it, 0) for i, it in enumerate(split.item_ids)}

    def score(cases: list[EvalCase]) -> torch.Tensor:
        mapped = []
        for c in cases:
            keep = [j for j, i in enumerate(c.items) if to_split[i] > 0]
            mapped.append(EvalCase(c.user, [to_split[c.items[j]] for j in keep],
                                   [c.ts[j] for j in keep], [c.types[j] for j in keep], 0))
        s = model_fn(mapped)[:, to_model]
        return torch.where(to_model.unsqueeze(0) == 0, -torch.inf, s)

    return score


def run_eval(model_dir: Path, data_path: Path, seed: int = 0, which: str = "test") -> dict[str, Any]:
    """Evaluate a version directory on ``data_path``'s split (same protocol as training)."""
    loaded = load_model_dir(model_dir)
    split = leave_one_out(load_interactions(data_path))
    fn = remapped_score_fn(model_score_fn(loaded.model), loaded.item_ids, split)
    metrics = evaluate(fn, split, which, seed=seed)
    unknown = len(set(split.item_ids) - set(loaded.item_ids))
    return {"model": str(model_dir), "version": loaded.version, "data": str(data_path),
            "split": which, "metrics": metrics, "items_unknown_to_model": unknown,
            "protocol": PROTOCOL}
