"""``GET /v1/items/{item_id}/similar``: nearest items by the served model's item table.

The table is the one the scorer ranks with (id embedding plus the projected
text embedding, so a cold item the model holds only by its text has
neighbours too); similarity is the cosine. An item the version has no row for
but whose text the ``items`` topic gives (a new item) is placed by that text
through the version's own text projection, as the scorer ranks it. The API loads the registry's
``CURRENT`` at start and then the newest version announced on
``model-updates``, verified against its manifest like the scorer does; a
version that fails to load is refused and the one loaded keeps answering.
torch is imported only when a registry is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: New items' vectors kept per loaded version (a few KB each).
MAX_PLACED = 10_000


class SimilarItems:
    def __init__(self, registry: Path | None) -> None:
        self.registry = registry
        self.version: str | None = None
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._table: Any = None  # [n_items, d], rows of unit length
        self._project: Any = None  # the version's text projection (None: no text tower)
        #: text -> its unit vector under the loaded version: MiniLM once per new item.
        self._placed: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load_current(self) -> None:
        """Load the registry's ``CURRENT`` (nothing when there is no registry or version)."""
        if self.registry is None:
            return
        from recstream.inference.registry import Registry

        info = Registry(self.registry).current()
        if info is not None:
            self.load(Path(info.path), info.sha256)

    def load(self, path: Path, sha256: str | None) -> bool:
        """Load one version folder; on any failure log it and keep the loaded one."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        from recstream.inference.model_dir import load_model_dir
        from recstream.inference.registry import verify_version_dir

        try:
            verify_version_dir(path, sha256)
            loaded = load_model_dir(path)
            with torch.inference_mode():
                table = F.normalize(loaded.model.item_table()[1:].float(), dim=1)
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop the API
            log.warning("similar items: refused %s: %s", path, exc)
            return False
        with self._lock:
            self._ids = list(loaded.item_ids)
            self._index = {item: i for i, item in enumerate(self._ids)}
            self._table = table
            self._project = loaded.model.text_proj if loaded.model.cfg.use_text else None
            self._placed = {}
            self.version = loaded.version
        log.info("similar items: serving %s (%d items)", loaded.version, len(self._ids))
        return True

    def similar(
        self, item_id: str, k: int, exclude: Collection[str], text: str | None = None
    ) -> list[tuple[str, float]] | None:
        """The ``k`` nearest items, or None when no model is loaded or it has neither the
        item nor, given its ``text``, a text tower to place it by (blocking: MiniLM)."""
        import torch

        with self._lock:
            table, index, ids, project = self._table, self._index, self._ids, self._project
            cache = self._placed  # this version's: a load meanwhile starts a new one
        row = index.get(item_id)
        if table is None or (row is None and (text is None or project is None)):
            return None
        if row is None:
            assert text is not None  # else answered None above
            placed = cache.get(text)
            if placed is None:
                placed = _placed_by_text(project, text)
                if len(cache) < MAX_PLACED:
                    cache[text] = placed
            scores = table @ placed
        else:
            scores = table @ table[row]
            scores[row] = -2.0  # never the item itself
        for gone in exclude:
            j = index.get(gone)
            if j is not None:
                scores[j] = -2.0
        top = torch.topk(scores, min(k, len(ids)))
        return [(ids[j], round(float(s), 6)) for s, j in zip(top.values.tolist(),
                                                             top.indices.tolist(), strict=True)
                if s > -2.0]  # fmt: skip


def _placed_by_text(project: Any, text: str) -> Any:
    """The unit vector a version gives an item known by its text alone."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from recstream.inference.item_text import embed_texts

    with torch.inference_mode():
        return F.normalize(project(embed_texts([text])).float()[0], dim=0)
