"""RecTools peers (``SASRecModel``, ``BERT4RecModel``) trained on *our* split, ranked by
*our* evaluator.

RecTools is a maintained library whose transformer recommenders train one
sequence per user (its latest ``session_max_len`` events) per epoch, so they
converge on a CPU within a session, unlike RecBole's prefix-expanded training.

How the split reaches RecTools: every user's training part as interactions
(item ids = our model indices, a time stamp per position so RecTools' stable
time sort keeps our order). Training is RecTools' own (its data preparator,
loss, negative sampler, Adam through Lightning); around it a Lightning callback
validates after every epoch with our evaluator (the same criterion as ours),
keeps the best weights, stops on patience, and honours a time budget. Scoring
feeds each case's history through the model's own recommend collation (so
BERT4Rec gets its trailing [MASK]) and its similarity module over the whole
catalogue; items RecTools never saw in training score -inf.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from recstream.bench.peer_result import PeerResult, PeerUnavailable
from recstream.bench.quality import SAMPLED_LOSS_ABOVE_ITEMS
from recstream.trainer.evaluate import ScoreFn, evaluate
from recstream.trainer.split import EvalCase, Split

log = logging.getLogger(__name__)

#: Our peer name -> RecTools model class.
MODELS = {"rectools-sasrec": "SASRecModel", "rectools-bert4rec": "BERT4RecModel"}
#: Above this many items a full softmax per position is too slow on a CPU: the
#: peers then take the library's sampled loss, gBCE with 256 negatives (gSASRec's
#: setting; BERT4Rec: sampled softmax), at the size where ours switches too.
SAMPLED_ABOVE_ITEMS = SAMPLED_LOSS_ABOVE_ITEMS


def rectools_version() -> str:
    """RecTools' version, once its transformer models import (they need Lightning)."""
    try:
        from importlib import metadata

        from rectools.models import BERT4RecModel, SASRecModel  # noqa: F401

        return metadata.version("rectools")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        raise PeerUnavailable(
            f"RecTools peers need `make bench-deps` (rectools[torch] without its pins): {exc!r}"
        ) from None


def peer_config(peer: str, n_items: int, max_len: int) -> dict[str, Any]:
    """The library's defaults (2 blocks, 4 heads, dropout 0.2, Adam lr 1e-3, batch 128,
    full softmax) with our sequence length, our width (64; its default 256 takes twice
    as long an epoch on a CPU, bench/RESULTS.md), and the sampled loss on a
    large catalogue."""
    if peer not in MODELS:
        raise ValueError(f"unknown peer {peer!r}; known: {', '.join(MODELS)}")
    cfg: dict[str, Any] = {"session_max_len": max_len, "n_factors": 64, "deterministic": True}
    if n_items > SAMPLED_ABOVE_ITEMS:
        cfg.update(loss="gBCE" if peer == "rectools-sasrec" else "sampled_softmax",
                   n_negatives=256)
    return cfg


def _dataset(split: Split) -> Any:
    """Every user's training part as a RecTools ``Dataset``; times are positions."""
    import pandas as pd
    from rectools import Columns
    from rectools.dataset import Dataset

    users, items, times = [], [], []
    for seq in split.train_sequences():
        users += [seq.user] * len(seq.items)
        items += seq.items
        times += range(len(seq.items))
    frame = pd.DataFrame({Columns.User: users, Columns.Item: items, Columns.Weight: 1.0,
                          Columns.Datetime: pd.to_datetime(times, unit="s")})
    return Dataset.construct(frame)


def _score_fn(model: Any, split: Split) -> ScoreFn:
    """Our cases -> the model's recommend batches -> scores in our index order. The item
    embeddings are computed at the first call and reused: the returned function belongs
    to one evaluation pass (as :func:`trainer.evaluate.model_score_fn`)."""
    prep = model.data_preparator
    to_internal = prep.item_id_map.to_internal
    ours = torch.tensor([int(to_internal.get(i, -1)) for i in range(split.n_items + 1)])
    ours[0] = -1
    known = ours >= 0
    table: list[torch.Tensor] = []  # the item embeddings, once per evaluation pass

    def score(cases: Sequence[EvalCase]) -> torch.Tensor:
        net = model.torch_model
        was_training = net.training
        net.eval()
        histories = [[int(ours[i]) for i in c.items if known[i]] for c in cases]
        batch = prep._collate_fn_recommend([(h, [1.0] * len(h), {}) for h in histories])
        with torch.no_grad():
            if not table:
                table.append(net.item_model.get_all_embeddings())
            item_embs = table[0]
            batch = {k: v.to(item_embs.device) for k, v in batch.items()}
            users = net.encode_sessions(batch, item_embs)[:, -1, :]
            sim = net.similarity_module
            logits = sim(sim.session_tower_forward(users), sim.item_tower_forward(item_embs))
        net.train(was_training)
        out = logits.float().cpu()[:, ours.clamp_min(0)]
        return torch.where(known.unsqueeze(0), out, -torch.inf)

    return score


class _Selection:
    """Validation after each epoch with our evaluator, patience, and a time budget."""

    def __init__(self, split: Split, seed: int, patience: int, budget_s: float | None,
                 name: str) -> None:
        self.model: Any = None  # the RecTools model, set once built (it builds the trainer)
        self.split, self.seed = split, seed
        self.patience, self.budget_s, self.name = patience, budget_s, name
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "valid": {}, "state": None}
        self.since_best, self.epochs, self.converged = 0, 0, False
        self.start = time.monotonic()

    def out_of_time(self) -> bool:
        return self.budget_s is not None and time.monotonic() - self.start > self.budget_s

    def callback(self) -> Any:
        from pytorch_lightning.callbacks import Callback

        outer = self

        class Select(Callback):  # type: ignore[misc]
            def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
                if outer.out_of_time():
                    trainer.should_stop = True

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                if outer.epoch_done():
                    trainer.should_stop = True

        return Select()

    def epoch_done(self) -> bool:
        """Validate; True when training should stop (patience or budget)."""
        self.epochs += 1
        began = time.monotonic()
        valid = evaluate(_score_fn(self.model, self.split), self.split, "valid", seed=self.seed)
        now = time.monotonic()
        log.info("%s epoch %d: valid NDCG@10 %.4f (%.0f s, validation %.1f s)", self.name,
                 self.epochs, valid["ndcg@10"], now - self.start, now - began)
        if valid["ndcg@10"] > self.best["score"]:
            state = {k: v.detach().to("cpu", copy=True)
                     for k, v in self.model.torch_model.state_dict().items()}
            self.best = {"score": valid["ndcg@10"], "epoch": self.epochs, "valid": valid,
                         "state": state}
            self.since_best = 0
        else:
            self.since_best += 1
        self.converged = self.since_best >= self.patience
        return self.converged or self.out_of_time()


def run_peer(
    peer: str,
    split: Split,
    max_len: int,
    device: str = "cpu",
    seed: int = 0,
    max_epochs: int = 200,
    patience: int = 10,
    budget_s: float | None = None,
    progress: bool = True,
) -> PeerResult:
    """Train RecTools' ``peer`` on ``split`` to early stop (or budget); test once.

    Logs one line per epoch (``progress`` is accepted for the RecBole runner's
    signature: Lightning's own bar stays off either way)."""
    cfg = peer_config(peer, split.n_items, max_len)
    rectools_version()
    import pytorch_lightning as pl
    import rectools.models as rt_models

    pl.seed_everything(seed, workers=True, verbose=False)
    select = _Selection(split, seed, patience, budget_s, peer)

    def trainer() -> Any:
        return pl.Trainer(max_epochs=max_epochs, min_epochs=1, deterministic=True,
                          accelerator="gpu" if device.startswith("cuda") else "cpu",
                          devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[select.callback()])

    select.model = getattr(rt_models, MODELS[peer])(
        **cfg, epochs=max_epochs, get_trainer_func=trainer, recommend_torch_device=device)
    model = select.model
    model.fit(_dataset(split))
    seconds = time.monotonic() - select.start
    if select.best["state"] is not None:
        model.torch_model.load_state_dict(select.best["state"])
    test = evaluate(_score_fn(model, split), split, "test", seed=seed)
    keys = ("n_blocks", "n_heads", "n_factors", "dropout_rate", "session_max_len", "loss",
            "n_negatives", "gbce_t", "lr", "batch_size", "mask_prob")
    config = {k: getattr(model, k) for k in keys if hasattr(model, k)}
    return PeerResult(select.best["valid"], test, select.epochs, select.best["epoch"], seconds,
                      select.converged, config)
