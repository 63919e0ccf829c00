"""The serving interface over a model version directory.

``load(model_dir)`` returns a :class:`SequenceRecommender` whose
``recommend(requests, k)`` turns :class:`schemas.messages.ScoreRequest` values into
ranked items, never recommending an item of the request's history or its
``exclude`` list. Features are built by :mod:`inference.features`, exactly as in
training. Items unknown to the model are dropped from the input sequence (the
model has no representation for them) but still can't be recommended, since
only catalogue items are ever ranked.

Scoring goes through a compiled backend (:mod:`inference.backends`): TensorRT,
ONNX Runtime or torch, chosen by name or automatically. Every backend is held
to eager torch's top-K by the parity tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from inference.backends.base import MASKED_SCORE, pad_exclusions
from inference.backends.select import select_backend
from inference.export import DEFAULT_K
from inference.features import build_batch, encode_event_types
from inference.model_dir import load_model_dir
from schemas.messages import RankedItem, ScoreRequest

log = logging.getLogger(__name__)


class SequenceRecommender:
    """A loaded model version, ready to score micro-batches of requests."""

    def __init__(
        self,
        model_dir: Path,
        *,
        backend: str = "auto",
        k: int = DEFAULT_K,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        loaded = load_model_dir(model_dir)
        self.model = loaded.model
        self.item_ids = loaded.item_ids
        self.index = {item: i + 1 for i, item in enumerate(loaded.item_ids)}
        self.metrics = loaded.metrics
        self._version = loaded.version
        self.backend = select_backend(
            backend,
            self.model,
            # A graph can return at most the whole catalogue.
            k=min(max(k, DEFAULT_K), self.model.cfg.n_items),
            model_dir=model_dir,
            model_version=loaded.version,
            threads=threads,
            cache_dir=cache_dir,
        )
        log.info("model %s scored by the %s backend on %s (top-%d)", self._version,
                 self.backend.name, self.backend.device, self.backend.max_k)

    @property
    def version(self) -> str:
        return self._version

    def recommend(self, requests: Sequence[ScoreRequest], k: int) -> list[list[RankedItem]]:
        """Top-``k`` items per request, best first (fewer if the catalogue runs out)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not requests:
            return []
        if k > self.backend.max_k:
            if self.backend.max_k < self.model.cfg.n_items:
                raise ValueError(f"k={k} exceeds the backend's top-K of {self.backend.max_k}")
            k = self.backend.max_k  # the catalogue runs out first
        items, ts, types, triggers, seen_rows = [], [], [], [], []
        for req in requests:
            if not (len(req.items) == len(req.ts) == len(req.event_types)):
                raise ValueError(
                    f"request for user {req.user_id}: items, ts and event_types differ in length"
                )
            known = [j for j, it in enumerate(req.items) if it in self.index]
            items.append([self.index[req.items[j]] for j in known])
            ts.append([req.ts[j] for j in known])
            types.append(encode_event_types([req.event_types[j] for j in known]))
            triggers.append(req.trigger_ts)
            # The whole history, not only the window the graph sees, is excluded.
            seen_rows.append(
                list(dict.fromkeys(self.index[it] for it in (*req.items, *req.exclude)
                                   if it in self.index))
            )
        width = max(1, min(self.model.cfg.max_len, max(len(s) for s in items)))
        batch = build_batch(items, ts, types, width, trigger_ts_ms=triggers)
        scores, idx = self.backend.topk(batch, pad_exclusions(seen_rows), k)
        out: list[list[RankedItem]] = []
        for row_s, row_i in zip(scores.tolist(), idx.tolist(), strict=True):
            # MASKED_SCORE marks "nothing left" (excluded or padding): never recommended.
            out.append([RankedItem(item_id=self.item_ids[i - 1], score=float(s))
                        for s, i in zip(row_s, row_i, strict=True)
                        if s > MASKED_SCORE / 10 and i > 0])
        return out

    def observe(self, requests: Sequence[ScoreRequest]) -> None:
        """Online-learning hook; this model learns offline, so nothing to do."""
        del requests


def load(
    model_dir: Path | str,
    *,
    backend: str = "auto",
    k: int = DEFAULT_K,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> SequenceRecommender:
    return SequenceRecommender(
        Path(model_dir), backend=backend, k=k, threads=threads, cache_dir=cache_dir
    )
