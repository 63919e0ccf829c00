"""The validation gate: publish a candidate only if it is not worse than the current.

Pure logic on metric dicts (as :func:`trainer.evaluate.evaluate` returns them),
so it is tested without a model or a broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

GATE_METRIC = "ndcg@10"


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    #: first_version | not_worse | worse_than_current | too_few_holdout | diverged
    reason: str
    detail: str


def decide(
    candidate: Mapping[str, float] | None,
    current: Mapping[str, float] | None,
    *,
    tolerance: float,
    n_cases: int,
    min_cases: int = 1,
    loss: float | None = None,
    metric: str = GATE_METRIC,
    has_current: bool | None = None,
) -> GateDecision:
    """``current is None`` means no version is published yet: anything trained goes.
    ``has_current=True`` says one is, though it has no figures (no hold-out case
    to measure either on): then nothing is published.

    Otherwise publish iff the candidate's ``metric`` on the hold-out is at least
    the current's minus ``tolerance``, measured on at least ``min_cases`` cases.
    """
    if loss is not None and not math.isfinite(loss):
        return GateDecision(False, "diverged", f"training loss is {loss}")
    if has_current is None:
        has_current = current is not None
    if not has_current:
        got = f"{candidate[metric]:.4f}" if candidate else "n/a"
        return GateDecision(True, "first_version",
                            f"no current version; candidate {metric} {got} on {n_cases} cases")
    if candidate is None or current is None or n_cases < min_cases:
        return GateDecision(False, "too_few_holdout",
                            f"{n_cases} hold-out cases < {min_cases} needed to compare")
    cand, cur = float(candidate[metric]), float(current[metric])
    text = f"candidate {metric} {cand:.4f} vs current {cur:.4f} (tolerance {tolerance:g}, {n_cases} cases)"
    if cand >= cur - tolerance:
        return GateDecision(True, "not_worse", text)
    return GateDecision(False, "worse_than_current", text)
