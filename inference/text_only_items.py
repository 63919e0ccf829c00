"""Items a served version has no row for, ranked by their text alone.

A model version knows the items it was trained on. An item added to the live
catalogue (the ``items`` topic) with a text is recommendable at once: its
MiniLM embedding goes through the version's own text projection, exactly the
representation the model gives an item without an id row (``id_mask == 0``),
and is scored against the user's state beside the compiled graph's top-K. The
trainer's next version then learns the item's id row. Plain torch, no broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import torch
from recstream.inference.model import SeqRecModel
from recstream.schemas.messages import RankedItem, ScoreRequest


class TextOnlyItems:
    """The projected texts of ``ids`` ([C, d] ``table``) under one model version."""

    def __init__(self, model: SeqRecModel, texts: Mapping[str, torch.Tensor],
                 known: Mapping[str, int], items: torch.Tensor) -> None:  # fmt: skip
        """``items``: the version's own item table (``model.item_table()``), the
        inputs of the users' states, computed once per version by the caller."""
        self.ids = [i for i in texts if i not in known]
        self.column = {item: c for c, item in enumerate(self.ids)}
        self._model = model
        self._items = items
        with torch.inference_mode():
            self.table = (model.text_proj(torch.stack([texts[i] for i in self.ids]).float())
                          if self.ids else torch.zeros(0, model.cfg.d_model))  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def users(self, items: torch.Tensor, event_types: torch.Tensor, times: torch.Tensor,
              query_times: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Each row's state at its last position [B, d]: what the graph scores items with."""
        with torch.inference_mode():
            return self._model.encode(items, event_types, times, query_times, self._items)[:, -1]

    def merge(self, ranked: list[list[RankedItem]], users: torch.Tensor,
              requests: Sequence[ScoreRequest], k: int,
              unavailable: Set[str] = frozenset()) -> list[list[RankedItem]]:  # fmt: skip
        """Each request's top ``k`` of its graph list and these items, never one of its
        history or ``exclude``, nor of ``unavailable`` (the graph's lists already leave
        those out)."""
        with torch.inference_mode():
            scores = users.float() @ self.table.t()  # [B, C]
            gone = [self.column[i] for i in self.ids if i in unavailable]
            if gone:
                scores[:, gone] = -float("inf")
            for row, req in enumerate(requests):
                drop = [self.column[i] for i in (*req.items, *req.exclude) if i in self.column]
                if drop:
                    scores[row, drop] = -float("inf")
            top_s, top_c = torch.topk(scores, k=min(k, len(self.ids)), dim=1)
        make, out = RankedItem.model_construct, []
        for have, row_s, row_c in zip(ranked, top_s.tolist(), top_c.tolist(), strict=True):
            extra = [make(item_id=self.ids[c], score=s)
                     for s, c in zip(row_s, row_c, strict=True) if s != -float("inf")]
            out.append(sorted([*have, *extra], key=lambda r: -r.score)[:k])
        return out
