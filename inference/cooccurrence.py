"""An online item-to-item baseline learned from the score requests themselves.

Two signals, both updated from every batch before it is scored:

* transitions: how often item B followed item A in some user's sequence, where a
  new item is linked to the few items before it, nearer ones counting more;
* popularity with exponential decay, so that what is popular *now* wins.

A user's score for a candidate is the recency-weighted sum of P(candidate | a
recent item) over their last items, plus a small popularity term that also
serves cold users. Plain dicts and ``heapq``: no numpy, so the scorer runs on
the worker image too, and one request costs O(history x neighbours).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from recstream.schemas.messages import Explanation, RankedItem, ScoreRequest

VERSION = "cooccurrence-v1"

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 1.5, "cart": 2.0, "purchase": 3.0, "rate": 2.0}
)


@dataclass(frozen=True)
class CooccurrenceConfig:
    #: A new item is linked to this many items before it ...
    link_window: int = 5
    #: ... with weight link_decay ** (distance - 1).
    link_decay: float = 0.6
    #: How many of the user's most recent distinct items vote for candidates ...
    history_len: int = 10
    #: ... the i-th most recent with weight recency_decay ** i.
    recency_decay: float = 0.7
    #: Neighbour rows are pruned back to this size when they reach twice it,
    #: which bounds both memory and the cost of one request.
    max_neighbors: int = 100
    #: Popularity halves every this many observed events.
    popularity_half_life: float = 20_000.0
    #: Weight of normalised popularity (max item = 1) next to transition probabilities.
    popularity_weight: float = 0.05
    #: Added to a row's total so that a single observation is not a certainty.
    smoothing: float = 1.0
    #: Users whose progress is remembered; the oldest are forgotten beyond this.
    max_users: int = 1_000_000
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)

    def __post_init__(self) -> None:
        if self.link_window < 1 or self.history_len < 1 or self.max_neighbors < 1:
            raise ValueError("link_window, history_len and max_neighbors must be >= 1")
        if not (0 < self.link_decay <= 1 and 0 < self.recency_decay <= 1):
            raise ValueError("link_decay and recency_decay must be in (0, 1]")
        if self.popularity_half_life <= 0 or self.popularity_weight < 0 or self.smoothing < 0:
            raise ValueError("popularity_half_life > 0, popularity_weight >= 0, smoothing >= 0")


#: Rescale decayed popularity before the growth factor overflows float precision.
_RESCALE_AT = 1e100


class CooccurrenceRecommender:
    """Implements :class:`inference.recommender.Recommender`."""

    def __init__(self, config: CooccurrenceConfig | None = None) -> None:
        self.config = config or CooccurrenceConfig()
        # Popularity is stored multiplied by a growing factor instead of decaying
        # every entry on every event; dividing by the factor gives the true value.
        self._pop: dict[str, float] = {}
        self._pop_growth = 1.0
        self._pop_step = math.exp(math.log(2.0) / self.config.popularity_half_life)
        self._rows: dict[str, dict[str, float]] = {}
        self._row_total: dict[str, float] = {}
        # Per user: (ts, how many items at that ts) of the newest item already counted.
        self._watermark: dict[str, tuple[int, int]] = {}
        self.observed_events = 0

    @property
    def version(self) -> str:
        return VERSION

    @property
    def n_items(self) -> int:
        return len(self._pop)

    # -- what the Recommender protocol asks of a model without a compiled scorer --

    #: No compiled scorer: a hot swap picks the next version's backend afresh.
    backend: None = None

    @property
    def item_ids(self) -> Sequence[str]:
        return ()  # learnt online: no fixed catalogue

    @property
    def can_explain(self) -> bool:
        return False

    @property
    def wants_item_texts(self) -> bool:
        return False  # it learns items from the events that mention them

    def set_item_texts(self, texts: Mapping[str, Any]) -> int:
        del texts
        return 0

    def explain(self, requests: Sequence[ScoreRequest], top: int) -> list[list[Explanation]]:
        return [[] for _ in requests]

    # -- learning ---------------------------------------------------------

    def observe(self, requests: Sequence[ScoreRequest]) -> None:
        for req in requests:
            self._observe_one(req)

    def _observe_one(self, req: ScoreRequest) -> None:
        items, ts = req.items, req.ts
        if not items or len(ts) != len(items):
            return
        first_new = self._first_new_index(req.user_id, ts)
        if first_new >= len(items):
            return  # a redelivered or re-sent request: nothing new to count
        cfg = self.config
        types = req.event_types if len(req.event_types) == len(items) else ()
        for i in range(first_new, len(items)):
            item = items[i]
            weight = cfg.event_weights.get(types[i], 1.0) if types else 1.0
            self._bump_popularity(item, weight)
            link = 1.0
            for j in range(i - 1, max(-1, i - 1 - cfg.link_window), -1):
                if items[j] != item:
                    self._bump_transition(items[j], item, link * weight)
                link *= cfg.link_decay
        last_ts = ts[-1]
        at_last = sum(1 for t in reversed(ts) if t == last_ts) if ts else 0
        self._remember(req.user_id, (last_ts, at_last))

    def _first_new_index(self, user_id: str, ts: Sequence[int]) -> int:
        """Index of the first item not counted before for this user.

        Sequences are oldest first. A late event inserted before the watermark is
        not counted: rare, and counting it would need the whole history.
        """
        mark = self._watermark.get(user_id)
        if mark is None:
            return 0
        mark_ts, mark_count = mark
        seen_at_mark = 0
        for i, t in enumerate(ts):
            if t < mark_ts:
                continue
            if t == mark_ts and seen_at_mark < mark_count:
                seen_at_mark += 1
                continue
            return i
        return len(ts)

    def _remember(self, user_id: str, mark: tuple[int, int]) -> None:
        marks = self._watermark
        marks.pop(user_id, None)  # re-insert so dict order is least recently seen first
        marks[user_id] = mark
        if len(marks) > self.config.max_users:
            del marks[next(iter(marks))]

    def _bump_popularity(self, item: str, weight: float) -> None:
        self.observed_events += 1
        self._pop_growth *= self._pop_step
        if self._pop_growth > _RESCALE_AT:
            scale = self._pop_growth
            self._pop = {k: v / scale for k, v in self._pop.items()}
            self._pop_growth = 1.0
        self._pop[item] = self._pop.get(item, 0.0) + weight * self._pop_growth

    def _bump_transition(self, src: str, dst: str, weight: float) -> None:
        row = self._rows.get(src)
        if row is None:
            row = self._rows[src] = {}
        row[dst] = row.get(dst, 0.0) + weight
        self._row_total[src] = self._row_total.get(src, 0.0) + weight
        limit = self.config.max_neighbors
        if len(row) >= 2 * limit:
            # Keep the strongest; the total keeps the pruned mass so probabilities
            # stay conditional on everything seen after ``src``.
            self._rows[src] = dict(heapq.nlargest(limit, row.items(), key=itemgetter(1)))

    # -- scoring ----------------------------------------------------------

    def recommend(self, requests: Sequence[ScoreRequest], k: int,
                  unavailable: Set[str] = frozenset()) -> list[list[RankedItem]]:  # fmt: skip
        if k < 1 or not requests:
            return [[] for _ in requests]
        cfg = self.config
        top_pop = max(self._pop.values(), default=0.0)
        pop_norm = (1.0 / top_pop) if top_pop > 0 else 0.0
        # One popular head per batch, long enough to survive any request's exclusions.
        longest = max(len(r.items) + len(r.exclude) for r in requests)
        pop = ((i, p) for i, p in self._pop.items() if i not in unavailable)  # once per batch
        head = heapq.nlargest(k + longest, pop, key=itemgetter(1))
        rows, totals = self._rows, self._row_total
        out: list[list[RankedItem]] = []
        for req in requests:
            excluded = set(req.items)
            excluded.update(req.exclude)
            scores: dict[str, float] = {}
            get = scores.get  # the hot loop: thousands of lookups per request
            weight = 1.0
            for item in _recent_distinct(req.items, cfg.history_len):
                row = rows.get(item)
                if row:
                    norm = weight / (totals[item] + cfg.smoothing)
                    for dst, count in row.items():
                        if dst not in excluded and dst not in unavailable:
                            scores[dst] = get(dst, 0.0) + count * norm
                weight *= cfg.recency_decay
            if cfg.popularity_weight > 0 and pop_norm > 0:
                pw = cfg.popularity_weight * pop_norm
                for dst in scores:
                    scores[dst] += pw * self._pop.get(dst, 0.0)
                taken = 0
                for dst, p in head:
                    if taken >= k:
                        break
                    if dst not in excluded and dst not in scores:
                        scores[dst] = pw * p
                        taken += 1
            best = heapq.nlargest(k, scores.items(), key=itemgetter(1))
            out.append([RankedItem(item_id=i, score=round(s, 6)) for i, s in best])
        return out


def _recent_distinct(items: Sequence[str], n: int) -> Iterable[str]:
    """The last ``n`` distinct items, most recent first."""
    seen: set[str] = set()
    for item in reversed(items):
        if item not in seen:
            seen.add(item)
            yield item
            if len(seen) >= n:
                return
