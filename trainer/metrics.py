"""Full-ranking metrics with honest tie-breaking.

The target's 0-based rank is the number of allowed items scoring strictly
higher plus a uniformly random position among the allowed items scoring
exactly the same (drawn from a seeded generator). The target is therefore never
favoured: a model that gives every item the same score ranks the target
uniformly at random, not first (the classic "rank = #higher" bug makes a constant
model look perfect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KS: tuple[int, ...] = (10, 20)


def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """0-based ranks [B] of ``targets`` [B] in ``scores`` [B, N].

    ``exclude`` [B, N] (bool) marks items removed from the ranking; the target is
    never removed even if marked. NaN scores are treated as the lowest score.
    """
    if scores.shape != exclude.shape or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"shape mismatch: scores {tuple(scores.shape)}, "
                         f"exclude {tuple(exclude.shape)}, targets {tuple(targets.shape)}")
    scores = torch.nan_to_num(scores.float(), nan=-math.inf)
    rows = torch.arange(scores.shape[0])
    is_target = torch.zeros_like(exclude)
    is_target[rows, targets] = True
    allowed = ~exclude | is_target
    t = scores[rows, targets].unsqueeze(1)
    higher = ((scores > t) & allowed).sum(1)
    ties = ((scores == t) & allowed & ~is_target).sum(1)
    # Uniform position among the target and its ties: floor(u * (ties + 1)).
    u = torch.rand(scores.shape[0], generator=generator)
    return higher + torch.floor(u * (ties + 1).float()).long()


def metrics_from_ranks(ranks: Sequence[int] | torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """HR@k, NDCG@k, MRR@k (means over users) from 0-based ranks."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    if r.numel() == 0:
        raise ValueError("no ranks to average")
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2.0), 0.0).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (r + 1.0), 0.0).mean().item()
    return out
