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
from collections.abc import Mapping, Sequence, Set
from pathlib import Path

import torch
from recstream.inference.backends.base import MASKED_SCORE, pad_exclusions
from recstream.inference.backends.select import select_backend
from recstream.inference.export import DEFAULT_K
from recstream.inference.features import SequenceBatch, build_batch, encode_event_types
from recstream.inference.model_dir import load_model_dir
from recstream.inference.recommender import Recommender
from recstream.inference.text_only_items import TextOnlyItems
from recstream.schemas.messages import Explanation, RankedItem, ScoreRequest

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
        previous: Recommender | None = None,
    ) -> None:
        loaded = load_model_dir(model_dir)
        self.model = loaded.model
        self.item_ids = loaded.item_ids
        self.index = {item: i + 1 for i, item in enumerate(loaded.item_ids)}
        self.metrics = loaded.metrics
        self._version = loaded.version
        #: Catalogue items without an id row, ranked by text (set_item_texts).
        self._text_only: TextOnlyItems | None = None
        self._item_table: torch.Tensor | None = None
        #: The last ``unavailable`` set seen and its model indices.
        self._unavailable: tuple[Set[str], list[int]] | None = None
        self.backend = select_backend(
            backend,
            self.model,
            # A graph can return at most the whole catalogue.
            k=min(max(k, DEFAULT_K), self.model.cfg.n_items),
            model_dir=model_dir,
            model_version=loaded.version,
            threads=threads,
            cache_dir=cache_dir,
            # A hot swap: the running version's backend, whose work may be reused.
            previous=None if previous is None else previous.backend,
        )
        log.info("model %s scored by the %s backend on %s (top-%d)", self._version,
                 self.backend.name, self.backend.device, self.backend.max_k)

    @property
    def version(self) -> str:
        return self._version

    @property
    def n_items(self) -> int:
        return int(self.model.cfg.n_items)

    @property
    def wants_item_texts(self) -> bool:
        """Whether this version ranks items by text alone (it has a text tower)."""
        return bool(self.model.cfg.use_text)

    def set_item_texts(self, texts: Mapping[str, torch.Tensor]) -> int:
        """Rank the items of ``texts`` (item id -> MiniLM embedding) that this version
        has no row for by their text alone, beside its own; return how many. Replaces
        the previous call's items. Call between batches, never during one."""
        if not self.wants_item_texts:
            return 0
        if self._item_table is None:  # once per version: the text tower over every item
            with torch.inference_mode():
                self._item_table = self.model.item_table()
        extra = TextOnlyItems(self.model, texts, self.index, self._item_table)
        self._text_only = extra if extra else None
        return len(extra)

    def recommend(self, requests: Sequence[ScoreRequest], k: int,
                  unavailable: Set[str] = frozenset()) -> list[list[RankedItem]]:  # fmt: skip
        """Top-``k`` items per request, best first (fewer if the catalogue runs out),
        none of ``unavailable``; with :meth:`set_item_texts`, items ranked by text
        alone compete for the ``k``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not requests:
            return []
        want = k  # items ranked by text may fill what the version's own catalogue cannot
        if k > self.backend.max_k:
            if self.backend.max_k < self.model.cfg.n_items:
                raise ValueError(f"k={k} exceeds the backend's top-K of {self.backend.max_k}")
            k = self.backend.max_k  # the catalogue runs out first
        batch, seen_rows, _ = self._inputs(requests, self._indices_of(unavailable))
        scores, idx = self.backend.topk(batch, pad_exclusions(seen_rows), k)
        out: list[list[RankedItem]] = []
        # model_construct: the ids come from the model's own catalogue and the
        # scores are floats, so pydantic's validation (a tenth of the scorer's
        # time at L=50) would check nothing.
        make, ids = RankedItem.model_construct, self.item_ids
        for row_s, row_i in zip(scores.tolist(), idx.tolist(), strict=True):
            # MASKED_SCORE marks "nothing left" (excluded or padding): never recommended.
            out.append([make(item_id=ids[i - 1], score=s)
                        for s, i in zip(row_s, row_i, strict=True)
                        if s > MASKED_SCORE / 10 and i > 0])
        extra = self._text_only
        if extra is not None:  # a second, eager pass for the users' states
            users = extra.users(batch.items, batch.event_types, batch.times, batch.query_times)
            out = extra.merge(out, users, requests, want, unavailable)
        return out

    def _indices_of(self, unavailable: Set[str]) -> list[int]:
        """The model indices of ``unavailable``, worked out once per distinct set (the
        catalogue hands out the same object until a record changes it)."""
        cached = self._unavailable
        if cached is None or cached[0] is not unavailable:
            index = self.index.get
            cached = self._unavailable = (unavailable, [i for i in map(index, unavailable) if i])
        return cached[1]

    def _inputs(
        self, requests: Sequence[ScoreRequest], gone: list[int] | None = None
    ) -> tuple[SequenceBatch, list[list[int]], list[list[str]]]:
        """The model's batch, each row's excluded item indices (``gone`` added to every
        row; a repeat is harmless), and each row's known items (the request's items the
        model has, oldest first: what the batch holds)."""
        items, ts, types, triggers, seen_rows, kept = [], [], [], [], [], []
        index, lookup = self.index.get, self.index.__getitem__
        for req in requests:
            if not (len(req.items) == len(req.ts) == len(req.event_types)):
                raise ValueError(
                    f"request for user {req.user_id}: items, ts and event_types differ in length"
                )
            try:  # all known, the usual case: one C-level pass
                idx = list(map(lookup, req.items))
            except KeyError:  # items the model does not know leave the sequence
                idx = [index(it, 0) for it in req.items]
                known = [j for j, i in enumerate(idx) if i]
                kept.append([req.items[j] for j in known])
                items.append([idx[j] for j in known])
                ts.append([req.ts[j] for j in known])
                types.append(encode_event_types([req.event_types[j] for j in known]))
            else:
                kept.append(req.items)
                items.append(idx)
                ts.append(req.ts)
                types.append(encode_event_types(req.event_types))
            triggers.append(req.trigger_ts)
            # The whole history, not only the window the graph sees, is excluded.
            seen = set(idx)
            seen.update(index(it, 0) for it in req.exclude)
            seen.discard(0)
            seen_rows.append([*seen, *gone] if gone else list(seen))
        width = max(1, min(self.model.cfg.max_len, max(len(s) for s in items)))
        return build_batch(items, ts, types, width, trigger_ts_ms=triggers), seen_rows, kept

    @property
    def can_explain(self) -> bool:
        """Whether the backend gives explanations (the torch backends do)."""
        return callable(getattr(self.backend, "explain", None))  # not every backend's API

    def explain(self, requests: Sequence[ScoreRequest], top: int = 3) -> list[list[Explanation]]:
        """Per request, the past events its recommendation drew on most (attention
        rollout), best first, one entry per item; [] per request where the backend
        cannot say (ONNX Runtime, TensorRT)."""
        if not requests or not self.can_explain:
            return [[] for _ in requests]
        batch, _, kept = self._inputs(requests)
        width = batch.items.shape[1]
        weights, cols = self.backend.explain(batch, top)  # type: ignore[attr-defined]
        out: list[list[Explanation]] = []
        for row_w, row_c, known in zip(weights.tolist(), cols.tolist(), kept, strict=True):
            by_item: dict[str, float] = {}
            for w, c in zip(row_w, row_c, strict=True):
                # Left padded and right aligned: column c holds the known item
                # len(known) - width + c (when that is >= 0).
                j = len(known) - width + c
                if w > 0 and 0 <= j < len(known):
                    by_item[known[j]] = by_item.get(known[j], 0.0) + w
            ranked = sorted(by_item.items(), key=lambda kv: -kv[1])
            out.append([Explanation(item_id=i, weight=round(w, 4)) for i, w in ranked])
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
    previous: object | None = None,
) -> SequenceRecommender:
    """``previous``: the recommender this one replaces in a running scorer, if any."""
    return SequenceRecommender(
        Path(model_dir), backend=backend, k=k, threads=threads, cache_dir=cache_dir,
        previous=previous,
    )
