"""The evaluator: full ranking over the catalogue, one code path for every model.

Anything that can score a batch of :class:`trainer.split.EvalCase` over the
catalogue (``[B, n_items + 1]``, column 0 = padding) is evaluated here, our model
and the RecBole peers alike, so the figures compare side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from recstream.inference.features import build_batch
from recstream.inference.model import SeqRecModel
from recstream.trainer.metrics import metrics_from_ranks, rank_targets
from recstream.trainer.split import EvalCase, Split

ScoreFn = Callable[[Sequence[EvalCase]], torch.Tensor]

PROTOCOL = (
    "leave-one-out on a stable integer-time-stamp sort, users with < 3 events dropped; "
    "full ranking over the catalogue; items interacted with before the target are "
    "excluded from the ranking, the target itself never; ties broken uniformly at "
    "random with a fixed seed (the target is never favoured)"
)


def evaluate(
    score_fn: ScoreFn,
    split: Split,
    which: str,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float | int]:
    """HR/NDCG/MRR @10 and @20 on the ``which`` ("valid"/"test") targets."""
    # Similar history lengths per batch: less padding to compute. The order is
    # deterministic, so the seeded tie-breaks are too.
    cases = sorted(split.cases(which), key=lambda c: len(c.items))
    gen = torch.Generator().manual_seed(seed)
    ranks = []
    for s in range(0, len(cases), batch_size):
        batch = cases[s : s + batch_size]
        scores = score_fn(batch)
        if tuple(scores.shape) != (len(batch), split.n_items + 1):
            raise ValueError(f"score_fn returned {tuple(scores.shape)}, expected "
                             f"({len(batch)}, {split.n_items + 1})")
        exclude = torch.zeros(scores.shape, dtype=torch.bool)
        exclude[:, 0] = True
        for r, case in enumerate(batch):
            exclude[r, case.items] = True
        targets = torch.tensor([c.target for c in batch])
        ranks.append(rank_targets(scores, targets, exclude, gen))
    out: dict[str, float | int] = dict(metrics_from_ranks(torch.cat(ranks)))
    out["users"] = len(cases)
    out["seed"] = seed
    return out


def model_score_fn(model: SeqRecModel, batch_size: int = 256) -> ScoreFn:
    """Score cases with our model: history -> features -> ``model.score``.

    The item table is computed once, at the first call, and reused by every
    later batch: on a large catalogue (Beauty: 54,543 rows) rebuilding it per
    batch was a quarter of the scoring time. So the returned function belongs
    to one evaluation pass: make a new one after the weights change.
    """
    max_len = model.cfg.max_len
    table: list[torch.Tensor] = []

    def score(cases: Sequence[EvalCase]) -> torch.Tensor:
        # As wide as the longest history only: positions are right-aligned.
        width = max(1, min(max_len, max(len(c.items) for c in cases)))
        batch = build_batch([c.items for c in cases], [c.ts for c in cases],
                            [c.types for c in cases], width)
        was_training = model.training
        model.eval()
        device = model.item_id.weight.device
        with torch.inference_mode():
            if not table:
                table.append(model.item_table())
            out = model.score(*(t.to(device) for t in (batch.items, batch.event_types,
                                                       batch.times, batch.query_times)),
                              table=table[0])
        model.train(was_training)
        return out.cpu()

    return score


def popularity_score_fn(split: Split) -> ScoreFn:
    """Most-popular-in-training baseline (ties broken by the evaluator)."""
    counts = torch.tensor(split.train_item_counts(), dtype=torch.float32)

    def score(cases: Sequence[EvalCase]) -> torch.Tensor:
        return counts.unsqueeze(0).expand(len(cases), -1).clone()

    return score


def random_score_fn(split: Split) -> ScoreFn:
    """Constant scores: every rank is a pure tie-break (a sanity floor)."""

    def score(cases: Sequence[EvalCase]) -> torch.Tensor:
        return torch.zeros(len(cases), split.n_items + 1)

    return score
