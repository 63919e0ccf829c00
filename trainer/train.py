"""The training loop: next-item prediction at every position, early stopping on
the validation targets only.

Training rows are the users' training parts cut from the end into windows of
``max_len`` targets (so long histories are used whole, newest context first).
Each epoch: shuffle rows (seeded), AdamW steps, then full-ranking NDCG@10 on the
validation targets; the best state is kept in memory and restored at the end.
The test targets are never looked at here.

Optionally, ``pretrain_epochs`` of masked-item pre-training come first (the same
rows, a share ``mask_prob`` of each row's events hidden and predicted from both
sides), then next-item training with a fresh optimizer, selected as above.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from recstream.inference.features import build_batch
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.trainer.evaluate import evaluate, model_score_fn
from recstream.trainer.split import Split

log = logging.getLogger(__name__)

SELECT_METRIC = "ndcg@10"


@dataclass
class TrainConfig:
    lr: float = 2e-3  # with ffn_mult=1: early stop within 10 min on 2 CPU cores (ML-100K)
    weight_decay: float = 0.1
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10  # evaluations without a better validation NDCG@10
    eval_every: int = 1  # epochs between validation evaluations
    time_budget_s: float | None = None  # stop (not converged) after this much training
    grad_clip: float = 1.0
    seed: int = 0
    progress: bool = True
    device: str = "cpu"  # the trainer's choice, never the model's: "cuda" to use a GPU
    pretrain_epochs: int = 0  # masked-item pre-training epochs before next-item training
    mask_prob: float = 0.2  # share of events hidden per row in pre-training
    #: Train on next items the user already had. False: the scorer never
    #: recommends an item of the user's history, so such targets (a funnel's
    #: click after its view) would teach a ranking that serving throws away.
    repeat_targets: bool = False

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad field (as its ``recstream
        train`` flag); return self for chaining."""
        checks = [
            (self.lr > 0, "lr (--lr) must be > 0"),
            (self.batch_size >= 1, "batch_size (--batch-size) must be >= 1"),
            (self.max_epochs >= 1, "max_epochs (--max-epochs) must be >= 1"),
            (self.patience >= 1, "patience (--patience) must be >= 1"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.pretrain_epochs >= 0, "pretrain_epochs (--pretrain-epochs) must be >= 0"),
            (0.0 < self.mask_prob < 1.0, "mask_prob (--mask-prob) must be in (0, 1)"),
            (self.time_budget_s is None or self.time_budget_s > 0,
             "time_budget_s (--time-budget) must be > 0"),
            (self.device == "cpu" or self.device.startswith("cuda"),
             f"device (--device) must be cpu or cuda[:N], got {self.device!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid training setting: {msg}")
        return self


@dataclass
class TrainResult:
    model: SeqRecModel  # with the best validation weights, eval mode
    best_epoch: int
    epochs: int
    train_seconds: float
    converged: bool  # stopped by patience (not by max_epochs or the time budget)
    valid: dict[str, Any]
    #: Per epoch: masked-item pre-training epochs first (``pretrain_epoch``,
    #: ``masked_loss``), then next-item ones (``epoch``, ``loss``, ``valid_ndcg@10``).
    history: list[dict[str, float]] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "epochs": self.epochs,
                "train_seconds": round(self.train_seconds, 1), "converged": self.converged}


def training_rows(
    split: Split, max_len: int, repeat_targets: bool = False
) -> tuple[torch.Tensor, ...]:
    """(items, event_types, times, query_times, targets) tensors for every window.

    ``repeat_targets=False``: a target already in the user's history before it is
    0 (no loss there), and a window left with no target is dropped.
    """
    inp_items, inp_ts, inp_types, tgts = [], [], [], []
    for seq in split.train_sequences():
        m = len(seq.items)
        targets = list(seq.items) if repeat_targets else _new_items_only(seq.items)
        for end in range(m - 1, 0, -max_len):
            start = max(0, end - max_len)
            if not any(targets[start + 1 : end + 1]):
                continue
            inp_items.append(seq.items[start:end])
            inp_ts.append(seq.ts[start:end])
            inp_types.append(seq.types[start:end])
            tgts.append(targets[start + 1 : end + 1])
    if not tgts:
        raise ValueError("no training positions: every user has fewer than 4 events"
                         + ("" if repeat_targets else " or only repeats of earlier items"))
    batch = build_batch(inp_items, inp_ts, inp_types, max_len)
    targets_t = torch.zeros_like(batch.items)
    for r, t in enumerate(tgts):
        targets_t[r, max_len - len(t) :] = torch.tensor(t)
    return batch.items, batch.event_types, batch.times, batch.query_times, targets_t


def _new_items_only(items: list[int]) -> list[int]:
    """``items`` with each item after its first occurrence replaced by 0."""
    seen: set[int] = set()
    out = []
    for i in items:
        out.append(0 if i in seen else i)
        seen.add(i)
    return out


def build_model(
    split: Split,
    cfg: ModelConfig,
    text_table: torch.Tensor | None,
    model_cls: type[SeqRecModel] = SeqRecModel,
) -> SeqRecModel:
    """A fresh ``model_cls`` for ``split``'s catalogue; items unseen in training get
    text-only representations when text is used."""
    model = model_cls(cfg)
    if cfg.use_text:
        if text_table is None:
            raise ValueError("use_text=True needs a text table (or set use_text=False)")
        model.set_item_text(text_table)
        counts = torch.tensor(split.train_item_counts())
        with torch.no_grad():
            model.id_mask.copy_((counts > 0).float())
    return model


def _optimizer(model: SeqRecModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and LayerNorm gains: decaying them only hurts.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
    )


def train(
    split: Split,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    text_table: torch.Tensor | None = None,
    model_factory: Callable[[Split, ModelConfig, torch.Tensor | None], SeqRecModel] | None = None,
) -> TrainResult:
    """Train from scratch on ``split``'s training parts; select on validation.

    ``model_factory`` (default :func:`build_model`) builds the fresh model, e.g. a
    subclass with a different training loss (the cold-start bench).
    """
    cfg.validate()
    if cfg.pretrain_epochs and not model_cfg.masked_pretraining:
        raise ValueError("pretrain_epochs > 0 needs ModelConfig(masked_pretraining=True)")
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = (model_factory or build_model)(split, model_cfg, text_table).to(device)
    rows = tuple(t.to(device) for t in training_rows(split, model_cfg.max_len,
                                                     cfg.repeat_targets))
    lengths = (rows[0] != 0).sum(1).cpu()
    gen = torch.Generator().manual_seed(cfg.seed)
    best: dict[str, Any] = {"score": -math.inf, "state": None, "epoch": 0, "valid": {}}
    history: list[dict[str, float]] = []
    since_best, converged, epoch = 0, False, 0
    start = time.monotonic()

    def out_of_time() -> bool:
        return cfg.time_budget_s is not None and time.monotonic() - start > cfg.time_budget_s

    if cfg.pretrain_epochs:
        bar = _progress(cfg, cfg.pretrain_epochs, "pre-training")
        opt = _optimizer(model, cfg)
        for pre in range(1, cfg.pretrain_epochs + 1):
            loss, _ = train_epoch(model, rows[:4], lengths, cfg, gen, opt, out_of_time,
                                  _masked_item_loss(model, cfg, gen))
            history.append({"pretrain_epoch": pre, "masked_loss": loss,
                            "seconds": time.monotonic() - start})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(masked_loss=f"{loss:.3f}")
            else:  # no bar (a log file, CI): one line per epoch instead
                log.info("pre-training epoch %d/%d: masked loss %.4f", pre,
                         cfg.pretrain_epochs, loss)
            if out_of_time():
                break
        if bar is not None:
            bar.close()
    # Next-item training starts its own optimizer: pre-training's moment
    # estimates belong to another objective.
    opt = _optimizer(model, cfg)
    bar = _progress(cfg, cfg.max_epochs, "training")
    for epoch in range(1, cfg.max_epochs + 1):
        # Out of time mid-epoch: validate what we have, then stop (below).
        loss, _ = train_epoch(model, rows, lengths, cfg, gen, opt, out_of_time)
        record: dict[str, float] = {"epoch": epoch, "loss": loss,
                                    "seconds": time.monotonic() - start}
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs or out_of_time():
            valid = evaluate(model_score_fn(model), split, "valid", seed=cfg.seed)
            record["valid_ndcg@10"] = float(valid[SELECT_METRIC])
            if valid[SELECT_METRIC] > best["score"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = {"score": valid[SELECT_METRIC], "epoch": epoch, "valid": valid,
                        "state": state}
                since_best = 0
            else:
                since_best += 1
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}",
                            valid=f"{record.get('valid_ndcg@10', float('nan')):.4f}",
                            best=f"{best['score']:.4f}@{best['epoch']}")
        else:
            log.info("epoch %d/%d: loss %.4f, valid NDCG@10 %s, best %.4f at epoch %d", epoch,
                     cfg.max_epochs, loss, f"{record['valid_ndcg@10']:.4f}"
                     if "valid_ndcg@10" in record else "-", best["score"], best["epoch"])
        if since_best >= cfg.patience:
            converged = True
            break
        if out_of_time():
            break
    if bar is not None:
        bar.close()
    seconds = time.monotonic() - start
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.cpu().eval()
    return TrainResult(model, best["epoch"], epoch, seconds, converged, best["valid"], history)


def _masked_item_loss(
    model: SeqRecModel, cfg: TrainConfig, gen: torch.Generator
) -> Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]:
    """The pre-training objective for :func:`train_epoch`: each real event hidden with
    probability ``cfg.mask_prob`` (seeded), and the newest one where a row drew
    none, so every row teaches something and the newest position, the one
    serving scores from, is practised too."""

    def loss(batch: list[torch.Tensor], negatives: torch.Tensor | None) -> torch.Tensor:
        items = batch[0]
        valid = items != 0
        hidden = (torch.rand(items.shape, generator=gen).to(items.device) < cfg.mask_prob) & valid
        hidden[:, -1] |= ~hidden.any(dim=1) & valid[:, -1]  # left padded: -1 is the newest
        return model.masked_item_loss(*batch[:4], hidden, negatives=negatives)

    return loss


def train_epoch(
    model: SeqRecModel,
    rows: tuple[torch.Tensor, ...],
    lengths: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    opt: torch.optim.Optimizer,
    should_stop: Callable[[], bool],
    loss_fn: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor] | None = None,
) -> tuple[float, int]:
    """One pass over ``rows`` (from :func:`training_rows`, on the model's device) in
    length-bucketed batches; ends early once ``should_stop()`` says so (checked
    after each step). Returns (mean loss, steps taken).

    ``loss_fn(batch, negatives)``: the objective; default next-item prediction
    (``model(*batch)``), else e.g. :func:`_masked_item_loss`.
    """
    if loss_fn is None:
        def loss_fn(batch: list[torch.Tensor], negatives: torch.Tensor | None) -> torch.Tensor:
            return model(*batch, negatives=negatives)

    device = rows[0].device
    model.train()
    total, steps = 0.0, 0
    for idx in _length_bucketed_batches(lengths, cfg.batch_size, gen):
        negatives = None
        if model.cfg.loss == "sampled":
            negatives = torch.randint(1, model.cfg.n_items + 1, (model.cfg.n_negatives,),
                                      generator=gen).to(device)
        # Drop the all-padding left columns: positions are right-aligned, so
        # the result is the same and the batch costs what its longest row costs.
        width = int(lengths[idx].max())
        idx = idx.to(device)
        loss = loss_fn([t[idx, -width:] for t in rows], negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total, steps = total + loss.item(), steps + 1
        if should_stop():
            break
    return total / max(steps, 1), steps


def _length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Row indices per batch: rows of similar length together, batch order shuffled.

    Shuffle, then stable-sort by length (equal lengths stay shuffled), cut into
    batches, shuffle the batches. Halves the padding compute on long-tailed
    histories (MovieLens: 56% of a 200-wide row is padding on average).
    """
    perm = torch.randperm(lengths.numel(), generator=gen)
    order = perm[torch.sort(lengths[perm], stable=True).indices]
    batches = list(torch.split(order, batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _progress(cfg: TrainConfig, total: int, desc: str) -> Any:
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True)


def config_summary(model_cfg: ModelConfig, cfg: TrainConfig) -> dict[str, Any]:
    return {"model": model_cfg.to_dict(), "train": asdict(cfg)}
