"""The live item catalogue, as the ``items`` topic states it: what may be shown.

Each record is an item's newest state (the topic is compacted, keyed by item id).
An item is unavailable once a record says ``available: false`` or its
``expires_at`` has passed; a later record can bring it back. The scorer and the
API apply the topic's records in order and ask :meth:`Catalogue.unavailable`
before each ranking. Plain Python, no broker, tested on its own.
"""

from __future__ import annotations

import heapq

from recstream.schemas.messages import InvalidMessage, ItemUpdate, parse_item_update


class Catalogue:
    def __init__(self) -> None:
        self.items: dict[str, ItemUpdate] = {}
        self._retired: set[str] = set()
        #: (expires_at, item_id) of items whose expiry has not been applied yet.
        self._expiries: list[tuple[int, str]] = []
        self._expired: set[str] = set()
        self.applied = 0
        self.unreadable = 0
        self._cached: frozenset[str] | None = None

    def apply_raw(self, raw: bytes | None) -> ItemUpdate | None:
        """Apply one ``items`` value; an unreadable one is counted and skipped."""
        try:
            update = parse_item_update(raw)
        except InvalidMessage:
            self.unreadable += 1
            return None
        self.apply(update)
        return update

    def apply(self, update: ItemUpdate) -> None:
        item = update.item_id
        self.items[item] = update
        self.applied += 1
        self._cached = None
        self._expired.discard(item)
        if update.available:
            self._retired.discard(item)
        else:
            self._retired.add(item)
        if update.expires_at is not None:
            heapq.heappush(self._expiries, (update.expires_at, item))

    def unavailable(self, now_ms: int) -> frozenset[str]:
        """Items never to recommend at ``now_ms``: retired or expired."""
        while self._expiries and self._expiries[0][0] <= now_ms:
            at, item = heapq.heappop(self._expiries)
            current = self.items.get(item)
            if current is not None and current.expires_at == at:  # not since renewed
                self._expired.add(item)
                self._cached = None
        if self._cached is None:
            self._cached = frozenset(self._retired | self._expired)
        return self._cached

    def category(self, item_id: str) -> str | None:
        update = self.items.get(item_id)
        return None if update is None else update.category
