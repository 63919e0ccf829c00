"""Parity of a backend with the eager reference, ``SeqRecModel.topk``.

Used by the tests, by the bench (a backend is only timed if it agrees) and by
``select_backend`` to decide whether an int8 graph may serve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from recstream.inference.backends.base import ScoringBackend
from recstream.inference.features import N_EVENT_TYPE_IDS, SequenceBatch
from recstream.inference.model import SeqRecModel


def probe_inputs(
    n_items: int, max_len: int, *, batch: int = 7, length: int | None = None, n_exclude: int = 6,
    seed: int = 0, full: bool = False,
) -> tuple[SequenceBatch, torch.Tensor]:
    """A reproducible batch: variable lengths (one empty row unless ``full``), left
    padding, minutes-to-months time gaps, trigger times after the newest event,
    0-padded exclusions. ``full`` fills every row to ``length``."""
    n = min(length or max_len, max_len)
    g = torch.Generator().manual_seed(seed)
    lens = torch.full((batch,), n) if full else torch.randint(0, n + 1, (batch,), generator=g)
    if not full and batch > 1:
        lens[0], lens[1] = 0, n  # an empty history and a full one, always
    items = torch.zeros(batch, n, dtype=torch.long)
    types = torch.zeros(batch, n, dtype=torch.long)
    times = torch.zeros(batch, n)
    query = torch.zeros(batch, n)
    for b, m in enumerate(lens.tolist()):
        if m == 0:
            continue
        gaps = torch.exp(torch.rand(m, generator=g) * 16.0).round()  # 1 s .. ~100 days, whole seconds
        t = -torch.flip(torch.cumsum(torch.flip(gaps, [0]), 0), [0]) + gaps[-1]  # newest at 0
        trigger = float(torch.randint(0, 3600, (1,), generator=g))
        items[b, n - m :] = torch.randint(1, n_items + 1, (m,), generator=g)
        types[b, n - m :] = torch.randint(1, N_EVENT_TYPE_IDS, (m,), generator=g)
        times[b, n - m :] = t - trigger
        query[b, n - m :] = t - trigger
        query[b, -1] = 0.0
    exclude = torch.randint(0, n_items + 1, (batch, n_exclude), generator=g)
    exclude[:, n_exclude // 2 :] = 0  # padding at the end of every row
    return SequenceBatch(items, types, times, query), exclude


def reference_topk(
    model: SeqRecModel, batch: SequenceBatch, exclude: torch.Tensor, k: int,
    exclude_history: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``SeqRecModel.topk`` with the dense mask the padded exclusions stand for."""
    b = batch.items.shape[0]
    mask = torch.zeros(b, model.cfg.n_items + 1, dtype=torch.bool)
    mask.scatter_(1, exclude, True)
    if exclude_history:
        mask.scatter_(1, batch.items, True)
    with torch.inference_mode():
        return model.eval().topk(batch.items, batch.event_types, batch.times, batch.query_times,
                                 mask, k)


@dataclass(frozen=True)
class Parity:
    """How far a backend's top-K is from the reference's."""

    #: mean |top-K set intersection| / K over rows
    overlap: float
    #: fraction of rows whose top-K *sets* are identical
    exact_rows: float
    #: max |score difference|, position by position, over rows whose sets agree
    max_score_diff: float

    def holds(self, atol: float) -> bool:
        return self.exact_rows == 1.0 and self.max_score_diff <= atol


def compare(
    ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]
) -> Parity:
    (rs, ri), (gs, gi) = ref, got
    overlaps, exact, diffs = [], [], [0.0]
    for r_s, r_i, g_s, g_i in zip(rs, ri, gs, gi, strict=True):
        common = len(set(r_i.tolist()) & set(g_i.tolist()))
        overlaps.append(common / len(r_i))
        same = common == len(r_i)
        exact.append(same)
        if same:  # sorted scores compare position by position even if ties swap ids
            diffs.append(float((r_s.sort().values - g_s.float().sort().values).abs().max()))
    n = max(len(overlaps), 1)
    return Parity(sum(overlaps) / n, sum(exact) / n, max(diffs))


def check_backend(
    backend: ScoringBackend, model: SeqRecModel, k: int, *, batch: int = 16, seed: int = 0
) -> Parity:
    """Parity of ``backend`` with the reference on a probe batch at full length."""
    probe, exclude = probe_inputs(model.cfg.n_items, model.cfg.max_len, batch=batch, seed=seed)
    return compare(reference_topk(model, probe, exclude, k), backend.topk(probe, exclude, k))
