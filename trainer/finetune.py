"""Warm-started fine-tuning on the window: grow the item tables, train a bounded while.

:func:`grow_model` copies every weight of the current version into a model
whose item tables have rows for the items new to the catalogue (new id
embeddings drawn like fresh ones, new text rows from the catalogue file or
zero). :func:`finetune` runs next-item training for at most ``max_epochs``
epochs or ``time_budget_s`` seconds, with no model selection: the hold-out is
kept for the gate (:mod:`trainer.gate`), never looked at here.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.trainer.split import Split
from recstream.trainer.train import TrainConfig, _optimizer, train_epoch, training_rows


class RoundCancelled(RuntimeError):
    """The process is stopping: the round is abandoned, nothing is published."""


def grow_model(
    base: SeqRecModel | None,
    split: Split,
    scratch_cfg: ModelConfig,
    text_table: torch.Tensor | None,
) -> SeqRecModel:
    """The candidate before training: ``base``'s weights on ``split``'s catalogue.

    ``text_table`` has one row per catalogue item not in ``base``, in catalogue
    order ([n_new, 384]; with no ``base``, every item). Items with training interactions in
    ``split`` (or an id embedding in ``base``) get ``id_mask`` 1.
    """
    counts = torch.tensor(split.train_item_counts())
    if base is None:
        model = SeqRecModel(dataclasses.replace(scratch_cfg, n_items=split.n_items))
        old_n1 = 1
    else:
        model = SeqRecModel(dataclasses.replace(base.cfg, n_items=split.n_items))
        old_n1 = base.cfg.n_items + 1
        if split.n_items + 1 < old_n1:
            raise ValueError("the catalogue cannot shrink under a warm start")
        new_state = model.state_dict()
        with torch.no_grad():
            for name, value in base.state_dict().items():
                target = new_state[name]
                if target.shape == value.shape:
                    target.copy_(value)
                elif target.shape[1:] == value.shape[1:] and value.shape[0] == old_n1:
                    target[:old_n1].copy_(value)  # item tables: old rows, new ones stay fresh
                else:
                    raise ValueError(f"{name}: {tuple(value.shape)} cannot grow to {tuple(target.shape)}")
    with torch.no_grad():
        mask = (counts > 0).float()
        if base is not None:  # an item once trained keeps its id embedding
            mask[:old_n1] = torch.maximum(mask[:old_n1], base.id_mask)
        model.id_mask.copy_(mask)
        if model.cfg.use_text and text_table is not None:
            model.item_text[old_n1:].copy_(text_table)
    return model


@dataclass
class FinetuneResult:
    model: SeqRecModel  # eval mode, CPU
    epochs: int
    steps: int
    last_loss: float
    seconds: float


def finetune(
    model: SeqRecModel, split: Split, cfg: TrainConfig, stop: threading.Event | None = None
) -> FinetuneResult:
    """Train ``model`` on ``split``'s training sequences within ``cfg``'s bounds."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = model.to(device)
    rows = tuple(t.to(device) for t in training_rows(split, model.cfg.max_len,
                                                     cfg.repeat_targets))
    lengths = (rows[0] != 0).sum(1).cpu()
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    start = time.monotonic()
    epochs = steps = 0
    last = math.nan
    bar = _progress(cfg)
    out_of_time = False

    def should_stop() -> bool:
        nonlocal out_of_time
        if stop is not None and stop.is_set():
            raise RoundCancelled("stop requested")
        out_of_time = cfg.time_budget_s is not None and time.monotonic() - start > cfg.time_budget_s
        return out_of_time

    for epoch in range(1, cfg.max_epochs + 1):
        if stop is not None and stop.is_set():
            raise RoundCancelled("stop requested")
        last, n = train_epoch(model, rows, lengths, cfg, gen, opt, should_stop)
        steps += n
        epochs = epoch
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last:.3f}")
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    return FinetuneResult(model.cpu().eval(), epochs, steps, last, time.monotonic() - start)


def _progress(cfg: TrainConfig) -> Any:
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.max_epochs, desc="fine-tuning", unit="epoch", dynamic_ncols=True)
