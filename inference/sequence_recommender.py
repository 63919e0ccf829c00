"""The serving interface over a model version directory.

``load(model_dir)`` returns a :class:`SequenceRecommender` whose
``recommend(requests, k)`` turns :class:`schemas.messages.ScoreRequest` values into
ranked items, never recommending an item of the request's history or its
``exclude`` list. Features are built by :mod:`inference.features`, exactly as in
training. Items unknown to the model are dropped from the input sequence (the
model has no representation for them) but still can't be recommended, since
only catalogue items are ever ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from inference.features import build_batch, encode_event_types
from inference.model_dir import load_model_dir
from schemas.messages import RankedItem, ScoreRequest


class SequenceRecommender:
    """A loaded model version, ready to score micro-batches of requests."""

    def __init__(self, model_dir: Path) -> None:
        loaded = load_model_dir(model_dir)
        self.model = loaded.model
        self.item_ids = loaded.item_ids
        self.index = {item: i + 1 for i, item in enumerate(loaded.item_ids)}
        self.metrics = loaded.metrics
        self._version = loaded.version

    @property
    def version(self) -> str:
        return self._version

    def recommend(self, requests: Sequence[ScoreRequest], k: int) -> list[list[RankedItem]]:
        """Top-``k`` items per request, best first (fewer if the catalogue runs out)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not requests:
            return []
        n1 = self.model.cfg.n_items + 1
        items, ts, types, triggers = [], [], [], []
        exclude = torch.zeros(len(requests), n1, dtype=torch.bool)
        for r, req in enumerate(requests):
            if not (len(req.items) == len(req.ts) == len(req.event_types)):
                raise ValueError(f"request for user {req.user_id}: items, ts and "
                                 "event_types differ in length")
            known = [j for j, it in enumerate(req.items) if it in self.index]
            items.append([self.index[req.items[j]] for j in known])
            ts.append([req.ts[j] for j in known])
            types.append(encode_event_types([req.event_types[j] for j in known]))
            triggers.append(req.trigger_ts)
            seen = [self.index[it] for it in (*req.items, *req.exclude) if it in self.index]
            exclude[r, seen] = True
        width = max(1, min(self.model.cfg.max_len, max(len(s) for s in items)))
        batch = build_batch(items, ts, types, width, trigger_ts_ms=triggers)
        with torch.inference_mode():
            scores, idx = self.model.topk(batch.items, batch.event_types, batch.times,
                                          batch.query_times, exclude, k)
        out: list[list[RankedItem]] = []
        for row_s, row_i in zip(scores.tolist(), idx.tolist(), strict=True):
            # -1e9 marks "nothing left" (excluded or padding); never recommend those.
            out.append([RankedItem(item_id=self.item_ids[i - 1], score=float(s))
                        for s, i in zip(row_s, row_i, strict=True) if s > -1e8 and i > 0])
        return out

    def observe(self, requests: Sequence[ScoreRequest]) -> None:
        """Online-learning hook; this model learns offline, so nothing to do."""
        del requests


def load(model_dir: Path | str) -> SequenceRecommender:
    return SequenceRecommender(Path(model_dir))
