"""Item texts for the trainer: read a catalogue file, embed the rows a model lacks.

Formats (by suffix): a RecBole ``.item`` file (read by :mod:`trainer.data`'s
reader: title, year, genres/category), JSON lines ``{"item_id": ..., "text": ...}``
(``.jsonl``), or ``item_id<TAB>text`` lines (anything else). Embeddings come
from :func:`inference.item_text.embed_texts` with its on-disk cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from recstream.inference.item_text import TEXT_DIM, embed_texts
from recstream.trainer.data import _item_text_from_atomic


def load_item_texts(path: Path) -> dict[str, str]:
    """item_id -> text from a catalogue file (see module docstring)."""
    path = Path(path)
    if path.suffix == ".item":
        return _item_text_from_atomic(path)
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".ndjson"):
                try:
                    doc = json.loads(line)
                    texts[str(doc["item_id"])] = str(doc["text"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: expected {{'item_id', 'text'}}: {exc}") from None
            else:
                item, _, text = line.rstrip("\n").partition("\t")
                if text:
                    texts[item] = text
    return texts


def text_rows(
    item_ids: Sequence[str], texts: Mapping[str, str], cache_dir: Path | None
) -> torch.Tensor:
    """[len(item_ids), 384] embeddings; zero rows for items without a text."""
    out = torch.zeros(len(item_ids), TEXT_DIM)
    have = [(r, texts[item]) for r, item in enumerate(item_ids) if item in texts]
    if have:
        out[[r for r, _ in have]] = embed_texts([t for _, t in have], cache_dir=cache_dir)
    return out
