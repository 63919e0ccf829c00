"""Online quality, the pure part: score a user's next event against their last list.

:func:`judge` says whether the event's item was in the user's last list
(:class:`LastRecommendation`) and at which rank; stream.last_recommendations
is the Faust glue, which forgets each list once judged.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import orjson

#: The cut-off of the online metrics (HR@10, NDCG@10).
K = 10


def rank_of(item_id: str, ranked: list[str] | tuple[str, ...], k: int = K) -> int | None:
    """0-based position of ``item_id`` among the first ``k`` of ``ranked``, or None."""
    for i, candidate in enumerate(ranked[:k]):
        if candidate == item_id:
            return i
    return None


def hit_and_ndcg(
    item_id: str, ranked: list[str] | tuple[str, ...], k: int = K
) -> tuple[bool, float]:
    """HR@k and NDCG@k of one next item against one ranked list: with one relevant
    item the ideal DCG is 1, so NDCG is ``1/log2(rank+2)`` at a hit, else 0."""
    rank = rank_of(item_id, ranked, k)
    if rank is None:
        return False, 0.0
    return True, 1.0 / math.log2(rank + 2)


@dataclass(frozen=True)
class LastRecommendation:
    """What the worker remembers of the last list sent to a user."""

    model_version: str
    trigger_event_id: str
    trigger_ts: int
    items: tuple[str, ...]

    def encode(self) -> bytes:
        return orjson.dumps(
            [self.model_version, self.trigger_event_id, self.trigger_ts, list(self.items)]
        )

    @classmethod
    def decode(cls, raw: bytes) -> LastRecommendation:
        version, trigger_id, trigger_ts, items = orjson.loads(raw)
        return cls(str(version), str(trigger_id), int(trigger_ts), tuple(items))

    def newer_than(self, other: LastRecommendation | None) -> bool:
        """Whether this list should replace ``other`` (a redelivered older list must not)."""
        return other is None or self.trigger_ts >= other.trigger_ts


@dataclass(frozen=True)
class ParsedRecommendation:
    user_id: str
    last: LastRecommendation
    #: When the worker read the trigger event (wall ms): the start of the loop.
    ingest_ms: int


def parse_recommendation(raw: bytes | None, k: int = K) -> ParsedRecommendation:
    """The parts of a ``recommendations`` value the worker keeps; ValueError if unusable
    (plain orjson, not the pydantic model: five fields of every recommendation)."""
    try:
        msg = orjson.loads(raw or b"")
        user = msg["user_id"]
        last = LastRecommendation(
            str(msg["model_version"]), str(msg["trigger_event_id"]), int(msg["trigger_ts"]),
            tuple(str(it["item_id"]) for it in msg["items"][:k]),
        )
        ingest_ms = int(msg["ingest_ms"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(user, str) or not user:
        raise ValueError("no user_id")
    return ParsedRecommendation(user, last, ingest_ms)


@dataclass(frozen=True)
class Judgement:
    model_version: str
    hit: bool
    ndcg: float


def judge(
    last: LastRecommendation | None, event_id: str, item_id: str, ts: int, k: int = K
) -> Judgement | None:
    """Score the user's next event against the last list; None if there is nothing to
    judge (the event that triggered the list, or an older one, does not test it)."""
    if last is None or event_id == last.trigger_event_id or ts < last.trigger_ts:
        return None
    hit, ndcg = hit_and_ndcg(item_id, last.items, k)
    return Judgement(last.model_version, hit, ndcg)


class RollingQuality:
    """HR@k and NDCG@k over the last ``window`` judgements of each model version."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._recent: dict[str, deque[tuple[bool, float]]] = {}
        self._sums: dict[str, list[float]] = {}

    def add(self, j: Judgement) -> tuple[float, float]:
        """Record one judgement; return the version's rolling (HR, NDCG)."""
        recent = self._recent.setdefault(j.model_version, deque())
        sums = self._sums.setdefault(j.model_version, [0.0, 0.0])
        recent.append((j.hit, j.ndcg))
        sums[0] += j.hit
        sums[1] += j.ndcg
        if len(recent) > self.window:
            old_hit, old_ndcg = recent.popleft()
            sums[0] -= old_hit
            sums[1] -= old_ndcg
        n = len(recent)
        # Clamp away float drift from the running sums.
        return max(0.0, sums[0] / n), max(0.0, sums[1] / n)
