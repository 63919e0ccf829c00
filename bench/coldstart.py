"""``recstream bench coldstart``: how well new items are recommended, text vs ids.

Protocol (the one leave-one-out split of ``../shared/data/README.md``, plus):

* a seeded RNG picks ``fraction`` of the catalogue items as *cold* (uniformly);
* every interaction with a cold item is removed from the users' training parts
  (as input and as target), and cold items are also left out of the training
  softmax: during training they do not exist, as for an item added after the
  model was trained. With text, their id rows are masked (``id_mask == 0``) and
  they are represented by their text alone; the id-only model keeps their
  untrained (initial) id rows, which is the honest id-only baseline;
* early stopping selects on validation users whose validation target is *not*
  cold (their histories without cold items), so no cold-item interaction is
  used to train or select;
* test: every user's full history as input (cold items included, as in
  serving), full ranking over the whole catalogue with the standard exclusions
  and seeded tie-breaks (:mod:`trainer.evaluate`). Metrics on the users whose
  test target is cold, and on all users.

Rows: popularity (training counts, so cold items score 0), ours (text on) and
id-only (``use_text`` off, otherwise identical). Prints a table and writes::

    {"dataset", "fraction", "seed", "cold_items",
     "rows": [{model, cold_users, cold_hr@10, cold_ndcg@10, cold_hr@20,
               all_hr@10, all_ndcg@10, train_seconds, epochs, ...}],
     "text_over_id_cold_hr10": x, ...}
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstream.bench.jsonio import write_report
from recstream.bench.quality import MAX_LEN, BenchError, _machine, dataset_path

if TYPE_CHECKING:
    import torch
    from recstream.inference.model import ModelConfig, SeqRecModel
    from recstream.trainer.data import Interactions
    from recstream.trainer.split import EvalCase, Split

#: Our rows: name -> model flags (everything else identical).
#: "ours" is the model as ``recstream train`` builds it; "ours+id-dropout" also
#: drops 30% of the id rows per training step, so text alone must rank items.
MODEL_ROWS: dict[str, dict[str, Any]] = {
    "ours": {"use_text": True},
    "ours+id-dropout": {"use_text": True, "id_dropout": 0.3},
    "id-only": {"use_text": False},
}
TABLE_COLS = ("model", "cold_users", "cold_hr@10", "cold_ndcg@10", "cold_hr@20", "all_users",
              "all_hr@10", "all_ndcg@10", "all_hr@20", "train_seconds", "epochs", "converged")
CHOICES = (
    "cold items: uniform seeded sample of the catalogue; their interactions removed from "
    "training parts (inputs and targets) and the items left out of the training softmax; "
    "text model: cold id rows masked (text only); id-only model: cold id rows untrained; "
    "early stopping on validation users whose validation target is not cold (histories "
    "without cold items); test: full history as input, whole catalogue ranked"
)


@dataclass
class ColdStartOptions:
    dataset: str
    data_root: Path
    json_out: Path
    fraction: float = 0.1
    seed: int = 0
    budget_s: float | None = None  # training seconds per model row
    max_epochs: int = 200
    patience: int = 10
    device: str = "cpu"
    progress: bool = True
    #: ModelConfig / TrainConfig fields to override (tests use tiny models)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)


def _split_cls() -> type:
    from recstream.trainer.split import Split

    @dataclass
    class FilteredSplit(Split):
        """Same users and training parts; evaluation cases filtered by ``keep``."""

        keep: Callable[[str, EvalCase], bool] | None = None

        def cases(self, which: str) -> list[EvalCase]:
            cases = super().cases(which)
            return cases if self.keep is None else [c for c in cases if self.keep(which, c)]

    return FilteredSplit


@dataclass
class ColdSplit:
    full: Split  # the standard split: test cases come from here
    train: Split  # training view: no cold item in training parts; warm-target validation
    cold: frozenset[int]  # model indices of the cold items
    removed_train_events: int
    excluded_valid_users: int  # validation users whose target is cold (not used to select)

    def cold_test_view(self) -> Split:
        """``full`` restricted to the test cases whose target is cold."""
        cls = _split_cls()
        cold = self.cold
        return cls(self.full.item_ids, self.full.users, self.full.dropped_users,
                   keep=lambda which, c: c.target in cold)


def choose_cold_items(n_items: int, fraction: float, seed: int) -> frozenset[int]:
    """``round(fraction * n_items)`` model indices in ``1..n_items``, seeded, uniform."""
    if not 0.0 < fraction < 1.0:
        raise BenchError(f"--fraction must be in (0, 1), got {fraction}")
    n_cold = round(fraction * n_items)
    if n_cold < 1 or n_cold >= n_items:
        raise BenchError(f"fraction {fraction} of {n_items} items leaves no cold or no warm item")
    return frozenset(random.Random(seed).sample(range(1, n_items + 1), n_cold))


def make_cold_split(split: Split, fraction: float, seed: int) -> ColdSplit:
    """The training view of ``split`` with ``fraction`` of its items made cold."""
    from recstream.trainer.split import UserSequence

    cold = choose_cold_items(split.n_items, fraction, seed)
    users, removed = [], 0
    for u in split.users:
        keep = [j for j in range(len(u.items) - 2) if u.items[j] not in cold]
        removed += len(u.items) - 2 - len(keep)
        keep += [len(u.items) - 2, len(u.items) - 1]  # validation and test events, as is
        users.append(UserSequence(u.user, [u.items[j] for j in keep], [u.ts[j] for j in keep],
                                  [u.types[j] for j in keep]))

    def keep_case(which: str, c: EvalCase) -> bool:
        if which == "test":
            raise ValueError("the training view has no test cases: test on the full split")
        return c.target not in cold

    train_view = _split_cls()(split.item_ids, users, split.dropped_users, keep=keep_case)
    excluded = sum(1 for u in split.users if u.items[-2] in cold)
    if excluded == len(split.users):
        raise BenchError("every validation target is cold: nothing to select on")
    return ColdSplit(split, train_view, cold, removed, excluded)


def cold_model_factory(cold: frozenset[int]) -> Callable[..., SeqRecModel]:
    """``trainer.train.train``'s ``model_factory``: as :func:`trainer.train.build_model`
    (cold items get ``id_mask == 0`` with text), with cold items left out of the loss."""
    import torch
    import torch.nn.functional as F
    from recstream.inference.model import SeqRecModel

    class WithoutColdItems(SeqRecModel):
        """Training loss over the warm catalogue only; scoring is unchanged."""

        def __init__(self, cfg: ModelConfig) -> None:
            super().__init__(cfg)
            mask = torch.zeros(cfg.n_items + 1, dtype=torch.bool)
            mask[0] = True  # padding is never a target either
            mask[sorted(cold)] = True
            self.register_buffer("not_in_loss", mask, persistent=False)

        def forward(self, items: torch.Tensor, event_types: torch.Tensor, times: torch.Tensor,
                    query_times: torch.Tensor, targets: torch.Tensor,
                    negatives: torch.Tensor | None = None) -> torch.Tensor:
            if self.cfg.loss != "full":
                if negatives is not None:
                    negatives = negatives[~self.not_in_loss[negatives]]
                return super().forward(items, event_types, times, query_times, targets, negatives)
            states = self.encode(items, event_types, times, query_times)
            keep = targets != 0
            tgt = targets[keep]
            if bool(self.not_in_loss[tgt].any()):
                raise ValueError("a cold item is a training target")
            logits = states[keep] @ self.item_table().t()
            logits = logits.masked_fill(self.not_in_loss.unsqueeze(0), -1e9)
            return F.cross_entropy(logits, tgt)

    def factory(split: Split, cfg: ModelConfig, text_table: torch.Tensor | None) -> SeqRecModel:
        from recstream.trainer.train import build_model

        return build_model(split, cfg, text_table, model_cls=WithoutColdItems)

    return factory


def _metrics_row(model: str, score_fn: Any, cs: ColdSplit, seed: int,
                 **facts: Any) -> dict[str, Any]:
    from recstream.trainer.evaluate import evaluate

    allm = evaluate(score_fn, cs.full, "test", seed=seed)
    cold_view = cs.cold_test_view()
    n_cold = len(cold_view.cases("test"))
    coldm = evaluate(score_fn, cold_view, "test", seed=seed) if n_cold else {}
    row: dict[str, Any] = {"model": model, "cold_users": n_cold}
    for k in ("hr@10", "ndcg@10", "hr@20", "mrr@10"):
        row[f"cold_{k}"] = round(float(coldm[k]), 5) if n_cold else None
    row["all_users"] = int(allm["users"])
    for k in ("hr@10", "ndcg@10", "hr@20", "mrr@10"):
        row[f"all_{k}"] = round(float(allm[k]), 5)
    row.update(facts)
    return row


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in TABLE_COLS]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(TABLE_COLS, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(TABLE_COLS, widths, strict=True)))


def run_coldstart_on(
    data: Interactions, split: Split, opts: ColdStartOptions, text_table: torch.Tensor,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bench on loaded data with a ready text table (tests call this directly)."""
    from recstream.inference.model import ModelConfig
    from recstream.trainer.evaluate import PROTOCOL, model_score_fn, popularity_score_fn
    from recstream.trainer.train import TrainConfig, train

    cs = make_cold_split(split, opts.fraction, opts.seed)
    cold_ids = sorted(split.item_ids[i - 1] for i in cs.cold)
    no_text = sum(1 for i in cs.cold if split.item_ids[i - 1] not in data.item_text)
    rows: list[dict[str, Any]] = []

    def write(complete: bool) -> dict[str, Any]:
        by = {r["model"]: r for r in rows}
        ours, ids = by.get("ours", {}).get("cold_hr@10"), by.get("id-only", {}).get("cold_hr@10")
        result = {
            "dataset": opts.dataset, "fraction": opts.fraction, "seed": opts.seed,
            "cold_items": len(cs.cold), "cold_item_ids": cold_ids,
            "cold_items_without_text": no_text,
            "removed_train_events": cs.removed_train_events,
            "valid_users_excluded_from_selection": cs.excluded_valid_users,
            "rows": rows,
            "text_over_id_cold_hr10": (round(ours / ids, 4) if ours is not None and ids
                                       else None),
            "text_minus_id_cold_hr10": (round(ours - ids, 5) if ours is not None
                                        and ids is not None else None),
            "complete": complete, "protocol": PROTOCOL, "cold_protocol": CHOICES,
            "data": {"name": data.name, "users": len(split.users), "items": split.n_items,
                     "events": len(data.events), **(extra or {})},
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
            "machine": _machine(opts.device),
        }
        return write_report(opts.json_out, result)

    print(f"[{opts.dataset}] {len(cs.cold)} cold items (seed {opts.seed}), "
          f"{cs.removed_train_events} training events removed, "
          f"{len(cs.cold_test_view().cases('test'))} test users with a cold target, "
          f"{cs.excluded_valid_users} validation users not used to select", flush=True)
    rows.append(_metrics_row("popularity", popularity_score_fn(cs.train), cs, opts.seed,
                             train_seconds=0.0, epochs=0, converged=True))
    write(False)
    factory = cold_model_factory(cs.cold)
    max_len = MAX_LEN.get(opts.dataset, 200)
    for name, flags in MODEL_ROWS.items():
        cfg = ModelConfig(n_items=split.n_items, **{"max_len": max_len, **opts.model_overrides,
                                                    **flags}).validate()
        tcfg = TrainConfig(**{"max_epochs": opts.max_epochs, "patience": opts.patience,
                              "time_budget_s": opts.budget_s, "seed": opts.seed,
                              "progress": opts.progress, "device": opts.device,
                              **opts.train_overrides})
        print(f"[{opts.dataset}] training {name} {flags}", flush=True)
        result = train(cs.train, cfg, tcfg, text_table=text_table if cfg.use_text else None,
                       model_factory=factory)
        rows.append(_metrics_row(
            name, model_score_fn(result.model), cs, opts.seed,
            train_seconds=round(result.train_seconds, 1), epochs=result.epochs,
            best_epoch=result.best_epoch, converged=result.converged,
            valid_ndcg10=round(float(result.valid.get("ndcg@10", float("nan"))), 5),
            valid_users=int(result.valid.get("users", 0)), flags=flags))
        write(False)
    print_table(f"{opts.dataset}: cold start, {len(cs.cold)} cold items "
                f"({opts.fraction:.0%}, seed {opts.seed})", rows)
    result = write(True)
    if result["text_over_id_cold_hr10"] is not None:
        print(f"text / id-only cold HR@10: {result['text_over_id_cold_hr10']:.3f}")
    return result


def run_coldstart(opts: ColdStartOptions) -> dict[str, Any]:
    """Load ``opts.dataset``, embed its item texts (cached), run the bench."""
    from recstream.inference.item_text import default_cache_dir
    from recstream.inference.model_dir import sha256_file
    from recstream.trainer.data import load_interactions
    from recstream.trainer.pipeline import item_text_table
    from recstream.trainer.split import leave_one_out

    path = dataset_path(opts.dataset, opts.data_root)
    data = load_interactions(path)
    if not data.item_text:
        raise BenchError(f"{opts.dataset} has no item text: a cold-start comparison of text "
                         f"and ids needs it (use ml-100k)")
    split = leave_one_out(data)
    table = item_text_table(split, data.item_text, default_cache_dir(), progress=opts.progress)
    return run_coldstart_on(data, split, opts, table,
                            extra={"path": str(path), "sha256": sha256_file(path)})
