"""The scorer's text embeddings of catalogue items its served version has no row for.

The ``items`` topic may announce an item, with its text, that no trained version
has seen. :meth:`CatalogueTexts.pending` names those whose text is not embedded
yet; :meth:`CatalogueTexts.embed` (run off the event loop: MiniLM loads once,
then a few ms per text) adds them to :attr:`CatalogueTexts.vectors`, which the
scorer hands to each version it serves (``Recommender.set_item_texts``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any

from recstream.inference.catalogue import Catalogue
from recstream.inference.recommender import Recommender

log = logging.getLogger(__name__)

#: texts -> one embedding row per text (MiniLM in the scorer; tests may pass their own).
Embedder = Callable[[Sequence[str]], Any]


def minilm(texts: Sequence[str]) -> Any:
    """all-MiniLM-L6-v2 embeddings [len(texts), 384] (torch imported here, on first use)."""
    from recstream.inference.item_text import embed_texts

    return embed_texts(texts)


class CatalogueTexts:
    def __init__(self, embed: Embedder = minilm) -> None:
        #: item id -> embedding; replaced whole on each update (read from other threads).
        self.vectors: Mapping[str, Any] = {}
        self._embedded: dict[str, str] = {}  # item id -> the text its vector embeds
        self._embed = embed
        #: Bumped on each update: a version is given the vectors again when it changed.
        self.generation = 0

    def pending(self, catalogue: Catalogue, known: Container[str]) -> dict[str, str]:
        """Catalogue items with a text, unknown to the served version, whose current
        text is not embedded yet: item id -> text."""
        return {item: u.text for item, u in catalogue.items.items()
                if u.text and item not in known and self._embedded.get(item) != u.text}

    def warm(self) -> int:
        """Load the embedder before the first new item needs it (MiniLM: seconds)."""
        self._embed(["warm-up"])
        return 0

    def embed(self, todo: Mapping[str, str]) -> int:
        """Embed ``todo`` (from :meth:`pending`) and publish the vectors; returns how many."""
        ids = list(todo)
        rows = self._embed([todo[i] for i in ids])
        self.vectors = {**self.vectors, **dict(zip(ids, rows, strict=True))}
        self._embedded.update(todo)
        self.generation += 1
        return len(ids)


class TextFollower:
    """Keeps the served version ranking the catalogue's new items by their text: loads
    the embedder as soon as a version with item text serves, then after each
    catalogue update or swap embeds what is new (one job at a time, in a thread)
    and hands the vectors to the version. Called by the scorer between batches; a
    failed embedding (no MiniLM) is logged once and ends following."""

    def __init__(self, texts: CatalogueTexts | None = None) -> None:
        self.texts: CatalogueTexts | None = texts or CatalogueTexts()
        self._job: asyncio.Future[int] | None = None
        self._checked: tuple[str, int] | None = None  # (version, catalogue records applied)
        self._given: tuple[str, int] | None = None  # (version, texts generation)
        self._known: tuple[str, frozenset[str]] = ("", frozenset())
        self._warmed = False

    def step(self, model: Recommender, catalogue: Catalogue) -> int | None:
        """Returns how many items ``model`` now ranks by text, when that changed."""
        texts = self.texts
        if texts is None or not model.wants_item_texts or not self._job_settled():
            return None
        if not self._warmed:  # the first new item then waits for its text only
            self._warmed = True
            self._job = asyncio.ensure_future(asyncio.to_thread(texts.warm))
            return None
        checked = (model.version, catalogue.applied)
        if checked != self._checked:
            self._checked = checked
            todo = texts.pending(catalogue, self._items_of(model))
            if todo:
                self._job = asyncio.ensure_future(asyncio.to_thread(texts.embed, todo))
                return None
        given = (model.version, texts.generation)
        if given == self._given:
            return None
        self._given = given
        return model.set_item_texts(texts.vectors)

    def _job_settled(self) -> bool:
        job = self._job
        if job is None:
            return True
        if not job.done():
            return False
        self._job = None
        if job.exception() is not None:
            log.error("new items' texts not embedded, they wait for a trained version: %r",
                      job.exception())  # fmt: skip
            self.texts = None
            return False
        if job.result():
            log.info("embedded %d new catalogue item texts", job.result())
        return True

    def _items_of(self, model: Recommender) -> frozenset[str]:
        if self._known[0] != model.version:
            self._known = (model.version, frozenset(model.item_ids))
        return self._known[1]
