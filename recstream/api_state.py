"""What ``recstream api`` answers from: a replica of the stream's topics.

Fed record by record from ``recommendations`` (each user's newest list),
``events`` (trending items, decayed in event time), ``user-deletions`` (a
forgotten user's list is dropped) and ``items`` (retired or expired items are
never answered; categories for the popular list's filter). Plain Python, tested without a broker; the
API process (:mod:`recstream.api`) feeds it from its own consumer, so every
replica converges on the topics and none keeps a store that can drift.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from operator import itemgetter

from recstream.inference.catalogue import Catalogue
from recstream.schemas.api import POPULAR_WINDOWS
from recstream.schemas.messages import (
    InvalidMessage,
    Recommendation,
    parse_deletion,
    parse_event,
)

#: Items per user the replica remembers, bounding its memory (the worker keeps up to
#: RECSTREAM_MAX_SEQ_LEN, 200 by default; a trending fill needs only the recent ones).
HISTORY = 50

#: Decayed counts are stored multiplied by 2 ** (t / half-life) from this origin;
#: past this exponent they are rescaled (floats keep ~1e308).
_RESCALE_AT = 512.0


@dataclass(frozen=True)
class LatestList:
    items: tuple[tuple[str, float], ...]
    model_version: str
    emitted_ms: int
    trigger_event_id: str


class TrendingItems:
    """Interactions per item with exponential decay in event time (half-life ``half_life_s``).

    A count is stored multiplied by ``2 ** ((ts - origin) / half_life)``, so adding an
    event is one addition and every count decays at once by moving the origin.
    """

    def __init__(self, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half-life must be > 0 s, got {half_life_s}")
        self.half_life_ms = half_life_s * 1000.0
        self._scaled: dict[str, float] = {}
        self._origin_ms: float | None = None
        self._newest_ms = 0
        self.events = 0

    def add(self, item_id: str, ts_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = float(ts_ms)
        exponent = (ts_ms - self._origin_ms) / self.half_life_ms
        if exponent > _RESCALE_AT:
            self._rescale(ts_ms)
            exponent = 0.0
        self._scaled[item_id] = self._scaled.get(item_id, 0.0) + 2.0**exponent
        self._newest_ms = max(self._newest_ms, ts_ms)
        self.events += 1

    def _rescale(self, new_origin_ms: float) -> None:
        assert self._origin_ms is not None
        factor = 2.0 ** (-(new_origin_ms - self._origin_ms) / self.half_life_ms)
        # Counts too small to matter any more are dropped: the map stays bounded.
        self._scaled = {i: c * factor for i, c in self._scaled.items() if c * factor > 1e-9}
        self._origin_ms = new_origin_ms

    def top(
        self, k: int, exclude: Collection[str] = (), keep: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` items with the largest decayed count as of the newest event, among
        those not in ``exclude`` for which ``keep`` holds (a filter inside the ranking)."""
        if self._origin_ms is None:
            return []
        to_now = 2.0 ** (-(self._newest_ms - self._origin_ms) / self.half_life_ms)
        pairs = ((i, c) for i, c in self._scaled.items()
                 if i not in exclude and (keep is None or keep(i)))  # fmt: skip
        best = heapq.nlargest(k, pairs, key=itemgetter(1))
        return [(i, round(c * to_now, 6)) for i, c in best if math.isfinite(c * to_now)]


class ApiState:
    """Each user's newest list and the trending items, from the topics' records."""

    def __init__(self, half_life_s: float = 3600.0, history: int = HISTORY) -> None:
        self.latest: dict[str, LatestList] = {}
        #: Each user's last ``history`` items: never filled in from the trending list.
        self.history: dict[str, deque[str]] = {}
        self._history_len = history
        self.trending = TrendingItems(half_life_s)
        #: One ranking per ``window`` an app may ask for (``POPULAR_WINDOWS``).
        self.windows = {w: TrendingItems(h) for w, h in POPULAR_WINDOWS.items()}
        self.catalogue = Catalogue()
        self.unreadable = 0

    def add_item(self, raw: bytes | None) -> None:
        """Apply an ``items`` record: retired and expired items are answered no more."""
        self.catalogue.apply_raw(raw)

    def add_recommendation(self, raw: bytes | None) -> None:
        """Keep the user's list if it is newer than the one held (by ``emitted_ms``)."""
        try:
            rec = Recommendation.model_validate_json(raw or b"")
        except ValueError:
            self.unreadable += 1
            return
        held = self.latest.get(rec.user_id)
        if held is not None and held.emitted_ms > rec.emitted_ms:
            return
        self.latest[rec.user_id] = LatestList(
            tuple((r.item_id, r.score) for r in rec.items), rec.model_version,
            rec.emitted_ms, rec.trigger_event_id,
        )  # fmt: skip

    def add_event(self, raw: bytes | None) -> None:
        """Count a valid event for trending; an invalid one is the worker's DLQ's business."""
        try:
            event = parse_event(raw)
        except InvalidMessage:
            self.unreadable += 1
            return
        self.trending.add(event.item_id, event.ts)
        seen = self.history.get(event.user_id)
        if seen is None:
            seen = self.history[event.user_id] = deque(maxlen=self._history_len)
        seen.append(event.item_id)
        for ranking in self.windows.values():
            ranking.add(event.item_id, event.ts)

    def add_deletion(self, raw: bytes | None) -> None:
        try:
            user = parse_deletion(raw).user_id
            self.latest.pop(user, None)
            self.history.pop(user, None)
        except InvalidMessage:
            self.unreadable += 1

    def user_list(
        self, user_id: str, k: int, exclude: Collection[str], now_ms: int,
        category: str | None = None,
    ) -> dict[str, object]:
        """The body of ``GET /v1/users/{user_id}/recommendations``. With ``category``:
        the user's list's items of it, in its order, then the category's trending
        items up to ``k`` (``filled_from_popular`` says how many). Trending items
        the user had among their last ``history`` events are never filled in."""
        keep = self._keep(now_ms, category)
        held = self.latest.get(user_id)
        seen = self.history.get(user_id, ())
        if held is None:
            items = self.trending.top(k, {*exclude, *seen}, keep)
            return {"user_id": user_id, "source": "popular", "items": _items(items),
                    "model_version": None, "emitted_ms": None, "age_ms": None,
                    "trigger_event_id": None}  # fmt: skip
        kept = [(i, s) for i, s in held.items if i not in exclude and keep(i)][:k]
        filled: list[tuple[str, float]] = []
        if category is not None and len(kept) < k:
            shown = {i for i, _ in held.items}  # a filtered-out item stays out
            filled = self.trending.top(k - len(kept), {*exclude, *shown, *seen}, keep)
        return {
            "user_id": user_id, "source": "stream", "items": _items(kept + filled),
            "model_version": held.model_version, "emitted_ms": held.emitted_ms,
            "age_ms": max(0, now_ms - held.emitted_ms),
            "trigger_event_id": held.trigger_event_id, "filled_from_popular": len(filled),
        }  # fmt: skip

    def popular(
        self, k: int, exclude: Collection[str], now_ms: int, category: str | None = None,
        window: str | None = None,
    ) -> dict[str, object]:
        """The body of ``GET /v1/popular``: ``k`` items of ``category`` when given (as the
        ``items`` topic states each item's), ranked among themselves, decayed with the
        ``window``'s half-life (the configured one when None)."""
        ranking = self.trending if window is None else self.windows[window]
        return {"items": _items(ranking.top(k, exclude, self._keep(now_ms, category))),
                "half_life_s": ranking.half_life_ms / 1000.0,
                "events": ranking.events}  # fmt: skip

    def _keep(self, now_ms: int, category: str | None) -> Callable[[str], bool]:
        """Whether an item may be answered: available, and of ``category`` when given."""
        gone = self.catalogue.unavailable(now_ms)  # cached; never copied per request
        if category is None:
            return lambda item: item not in gone
        return lambda item: item not in gone and self.catalogue.category(item) == category


def _items(pairs: list[tuple[str, float]]) -> list[dict[str, object]]:
    return [{"item_id": i, "score": s} for i, s in pairs]
