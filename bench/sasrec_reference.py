"""RecBole's SASRec at the scorer benchmark's shape: a widely used implementation,
timed in the same run as ours.

This VM's speed drifts by 2x from one hour to the next, so an absolute users/s
figure says little on its own; the ratio to a well-known implementation timed on
the same inputs minutes apart does. RecBole (1.2.1, ``make bench-deps``) is the
SASRec our quality benchmark already ranks against. Its model is built with
RecBole's own default hyper-parameters (``properties/model/SASRec.yaml``), only
the shape (items, length, width, layers, heads) set to the benchmark's, and
scored the way RecBole scores a full ranking (``full_sort_predict``), then
masked and cut to the top-K like our eager baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from recstream.inference.features import SequenceBatch

#: The backend name of the reference rows.
REFERENCE = "recbole-sasrec"
#: RecBole's field names, as its dataset defaults spell them.
_FIELDS = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
           "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_"}


class ReferenceUnavailable(RuntimeError):
    """RecBole is not installed, or cannot load here."""


def _number(value: Any) -> Any:
    """PyYAML reads RecBole's ``1e-12`` as a string (YAML 1.1 floats need a dot);
    RecBole's own loader reads it as a float."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _load() -> tuple[Any, Any, dict[str, Any]]:
    """(SASRec class, Interaction class, RecBole's SASRec defaults)."""
    try:
        import yaml
        from recstream.bench.recbole_peers import _numpy2_shim

        _numpy2_shim()
        import recbole
        from recbole.data.interaction import Interaction
        from recbole.model.sequential_recommender.sasrec import SASRec
    except ImportError as exc:
        raise ReferenceUnavailable(
            f"RecBole is not importable ({exc}); install it with `make bench-deps`") from None
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", "SASRec.yaml")
    with open(path) as f:
        defaults = {k: _number(v) for k, v in yaml.safe_load(f).items()}
    return SASRec, Interaction, defaults


class _Dataset:
    """The one thing RecBole's SequentialRecommender asks of a dataset: the item count."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def left_aligned(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our left-padded ``[B, L]`` item rows -> RecBole's (right-padded rows, lengths)."""
    n = items.shape[1]
    lengths = (items != 0).sum(dim=1)
    src = torch.arange(n).unsqueeze(0) + (n - lengths).unsqueeze(1)  # row r's event j
    out = torch.gather(items, 1, src.clamp(max=n - 1))
    out = torch.where(torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1), out, 0)
    return out, lengths.clamp(min=1)  # RecBole reads position len - 1, even for an empty row


class RecBoleSASRec:
    """RecBole's SASRec classes and defaults, loaded once, at one benchmark shape.

    Raises :class:`ReferenceUnavailable` where RecBole is not importable.
    """

    def __init__(self, n_items: int, max_len: int, d_model: int, n_layers: int,
                 n_heads: int) -> None:
        self._sasrec, self._interaction, defaults = _load()
        self.n_items = n_items
        #: RecBole's SASRec defaults with the benchmark's shape (what the JSON records).
        self.config: dict[str, Any] = {
            **defaults, "hidden_size": d_model, "n_layers": n_layers, "n_heads": n_heads,
            "MAX_ITEM_LIST_LENGTH": max_len, "n_items": n_items,
        }

    def scorer(self, batch: SequenceBatch, exclude: torch.Tensor, k: int, device: str,
               seed: int = 0) -> Callable[[], object]:
        """A no-argument function that scores ``batch`` with a freshly initialised
        model (weights do not change its cost) and returns top-``k``."""
        dev = torch.device(device)
        torch.manual_seed(seed)
        cfg = {**self.config, **_FIELDS, "device": dev}
        # + 1: RecBole's item 0 is padding.
        model = self._sasrec(cfg, _Dataset(self.n_items + 1)).to(dev).eval()
        seqs, lengths = left_aligned(batch.items)
        inter = self._interaction({model.ITEM_SEQ: seqs, model.ITEM_SEQ_LEN: lengths}).to(dev)
        mask = torch.zeros(batch.items.shape[0], self.n_items + 1, dtype=torch.bool)
        mask.scatter_(1, exclude, True)
        mask.scatter_(1, batch.items, True)  # history and padding (0), as our baseline masks
        mask = mask.to(dev)

        def run() -> object:
            with torch.inference_mode():
                scores = model.full_sort_predict(inter).masked_fill(mask, -torch.inf)
                out, idx = torch.topk(scores, k, dim=1)
                return out.cpu(), idx.cpu()

        return run
