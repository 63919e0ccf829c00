"""RecBole peers (SASRec, BERT4Rec, GRU4Rec) trained on *our* split, ranked by *our* evaluator.

How the split reaches RecBole: ``benchmark_filename`` pre-split atomic files
(``<name>.train.inter``, ``.valid.inter``, ``.test.inter``), already augmented
the way RecBole's sequential models read them: one row per prediction with the
history as ``item_id_list:token_seq`` (aliased to ``item_id`` so both share one
id mapping) and the target as ``item_id:token``. The training file holds every
next-item prediction inside each user's training part; validation and test
rows hold exactly our validation and test cases. Item tokens are our model
indices, so scores map back without any guessing.

Training uses RecBole's data loader (its batching and, for BERT4Rec, its
masking transform), the model's own ``calculate_loss`` and RecBole's default
hyper-parameters (Adam, lr 1e-3, batch 2048, the model's YAML), with our loop
around it: validation after every epoch with our evaluator (the same
criterion as ours), patience, an optional time budget (checked after every
batch; a cut-short epoch is still validated),
and the best state restored before the single test evaluation. RecBole's own
``Trainer`` is not used: it writes tensorboard and checkpoint folders into the
working directory and selects on its own metric.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from recstream.bench.peer_result import PeerResult, PeerUnavailable
from recstream.trainer.evaluate import ScoreFn, evaluate
from recstream.trainer.split import EvalCase, Split

MODELS = {"sasrec": "SASRec", "bert4rec": "BERT4Rec", "gru4rec": "GRU4Rec"}
DATASET = "recstream"


def recbole_version() -> str:
    """RecBole's version, once every module :func:`run_peer` needs imports.

    Checked before anything trains: RecBole goes in with ``--no-deps``, so a
    dependency it imports at load time (tensorboard, for one) can be missing,
    and that must not surface after an hour of training our rows.
    """
    try:
        import recbole
    except ImportError as exc:
        raise PeerUnavailable(
            "RecBole is not installed: run `make bench-deps` (the bench extra, then "
            "recbole==1.2.1 with --no-deps: its pins clash with faust)"
        ) from exc
    try:
        _numpy2_shim()
        import recbole.config  # noqa: F401
        import recbole.data  # noqa: F401
        import recbole.utils  # noqa: F401
    except ImportError as exc:
        raise PeerUnavailable(
            f"RecBole {recbole.__version__} is installed but cannot load: {exc}. Run "
            "`make bench-deps` (the bench extra lists what RecBole imports)"
        ) from exc
    return str(recbole.__version__)


def write_split_files(split: Split, folder: Path, max_len: int) -> Path:
    """Write ``folder/recstream/recstream.{train,valid,test}.inter``; return ``folder``."""
    d = folder / DATASET
    d.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def row(user: str, history: Sequence[int], target: int) -> str:
        return f"{user}\t{' '.join(map(str, history[-max_len:]))}\t{target}\n"

    with (d / f"{DATASET}.train.inter").open("w") as f:
        f.write(header)
        for seq in split.train_sequences():
            for t in range(1, len(seq.items)):
                f.write(row(seq.user, seq.items[:t], seq.items[t]))
    for which in ("valid", "test"):
        with (d / f"{DATASET}.{which}.inter").open("w") as f:
            f.write(header)
            for c in split.cases(which):
                f.write(row(c.user, c.items, c.target))
    return folder


def _numpy2_shim() -> None:
    """RecBole 1.2.1's ``Config.compatibility_settings`` reads ``np.float_``,
    ``np.complex_`` and ``np.unicode_``, removed in NumPy 2. Restore them as the
    aliases they were (only in the process that runs the peers)."""
    import numpy as np

    for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
        if old not in np.__dict__:
            setattr(np, old, getattr(np, new))


def _config(peer: str, folder: Path, max_len: int, device: str, seed: int,
            max_epochs: int) -> Any:
    from recbole.config import Config

    _numpy2_shim()
    overrides = {
        "data_path": str(folder),
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "MAX_ITEM_LIST_LENGTH": max_len,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": None, "RATING_FIELD": None,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "epochs": max_epochs,
        "seed": seed,
        "reproducibility": True,
        "use_gpu": device.startswith("cuda"),
        "gpu_id": "0" if device.startswith("cuda") else "",
        "show_progress": False,
        "checkpoint_dir": str(folder / "saved"),
        "state": "WARNING",
    }
    return Config(model=MODELS[peer], dataset=DATASET, config_dict=overrides)


def _score_fn(model: Any, dataset: Any, split: Split, max_len: int, device: torch.device) -> ScoreFn:
    """Our cases -> RecBole inputs (left-aligned histories of internal ids) -> scores in
    our index order."""
    from recbole.data.interaction import Interaction

    field = dataset.iid_field
    token2id = dataset.field2token_id[field]
    # Our index i is RecBole token str(i); items RecBole never saw score -inf.
    ours_to_rb = torch.tensor([0] + [token2id.get(str(i), 0) for i in range(1, split.n_items + 1)])
    rb_of = {i: int(ours_to_rb[i]) for i in range(1, split.n_items + 1)}

    def score(cases: Sequence[EvalCase]) -> torch.Tensor:
        seqs = torch.zeros(len(cases), max_len, dtype=torch.long)
        lens = torch.zeros(len(cases), dtype=torch.long)
        for r, c in enumerate(cases):
            hist = [rb_of[i] for i in c.items[-max_len:] if rb_of[i] > 0]
            if not hist:  # RecBole models need one event; the score is then uninformed
                hist = [0]
            seqs[r, : len(hist)] = torch.tensor(hist)
            lens[r] = max(1, len(hist))
        inter = Interaction({model.ITEM_SEQ: seqs, model.ITEM_SEQ_LEN: lens}).to(device)
        model.eval()
        with torch.no_grad():
            s = model.full_sort_predict(inter).reshape(len(cases), -1).float().cpu()
        out = s[:, ours_to_rb]
        return torch.where(ours_to_rb.unsqueeze(0) == 0, -torch.inf, out)

    return score


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
    """Train RecBole's ``peer`` on ``split`` to early stop (or budget); test once."""
    if peer not in MODELS:
        raise ValueError(f"unknown peer {peer!r}; known: {', '.join(MODELS)}")
    recbole_version()
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    with tempfile.TemporaryDirectory(prefix="recstream-recbole-") as tmp:
        folder = write_split_files(split, Path(tmp), max_len)
        config = _config(peer, folder, max_len, device, seed, max_epochs)
        init_seed(seed, reproducibility=True)
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        dev = torch.device(config["device"])
        model = get_model(config["model"])(config, train_data.dataset).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                               weight_decay=config["weight_decay"] or 0.0)
        score = _score_fn(model, dataset, split, max_len, dev)
        best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "valid": {}, "state": None}
        since_best, converged, epoch = 0, False, 0
        start = time.monotonic()
        for epoch in range(1, max_epochs + 1):
            model.train()
            out_of_time = False
            for batch in train_data:
                loss = model.calculate_loss(batch.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # A RecBole epoch takes minutes on a CPU: honour the budget inside it.
                if budget_s is not None and time.monotonic() - start > budget_s:
                    out_of_time = True
                    break
            valid = evaluate(score, split, "valid", seed=seed)
            if progress:
                print(f"  {peer} epoch {epoch}: loss {loss.item():.4f} valid ndcg@10 "
                      f"{valid['ndcg@10']:.4f} ({time.monotonic() - start:.0f} s)", flush=True)
            if valid["ndcg@10"] > best["score"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = {"score": valid["ndcg@10"], "epoch": epoch, "valid": valid, "state": state}
                since_best = 0
            else:
                since_best += 1
            if since_best >= patience:
                converged = True
                break
            if out_of_time or (budget_s is not None and time.monotonic() - start > budget_s):
                break
        seconds = time.monotonic() - start
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        test = evaluate(score, split, "test", seed=seed)
        cfg = {k: config[k] for k in ("learning_rate", "train_batch_size", "MAX_ITEM_LIST_LENGTH",
                                      "loss_type", "weight_decay") if k in config}
        return PeerResult(best["valid"], test, epoch, best["epoch"], seconds, converged, cfg)
