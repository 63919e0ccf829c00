"""Offsets that never reached the agent, and re-reading them.

Seen with faust-streaming 0.15.3 (issue #7, the scale-out takeover test): right
after a rebalance, around the moment the tables' recovery ends and Faust seeks
every partition back to its committed offset, a run of offsets (5 to 33 in the
runs logged) in every partition never reached the agent, while the next ones
did. The likely culprit is Faust's consumer dropping records below a read
offset that a record fetched before the seek had moved forward; the cause was
not proven. The effect was: events lost from the table and the changelog, and
the group's committed offset stalled in front of the hole for good.

:class:`OffsetGaps` notices such a hole (within one consumer generation, the
offsets of a partition reach the agent in order and without gaps) and says
where to seek back to. After a few re-reads that do not fill it, it gives up
on the hole and says so: offsets can also be missing legitimately (transaction
markers of a transactional producer, a compacted topic), and a worker must not
loop on those. Pure logic; :class:`stream.agents.BatchProcessor` does the
seeking, logging and counting.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

#: Re-reads of one hole before giving up on it.
MAX_ATTEMPTS = 3
#: Seconds between two re-reads of the same hole: records already fetched
#: past the hole keep arriving for a moment after a seek.
RETRY_S = 0.5


class Hole(NamedTuple):
    first: int
    last: int  # inclusive


class Verdict(NamedTuple):
    #: Seek the partition back to this offset (the first missing one).
    seek_to: int | None = None
    #: A hole that re-reading filled.
    filled: Hole | None = None
    #: A hole given up on after MAX_ATTEMPTS re-reads.
    abandoned: Hole | None = None


NOTHING = Verdict()


@dataclass
class _Partition:
    generation: int
    #: The next offset expected: every offset below it reached the agent.
    frontier: int
    #: Offsets seen beyond a hole, waiting for the hole to fill.
    ahead: set[int] = field(default_factory=set)
    #: The first hole noticed and not yet filled or abandoned.
    hole: Hole | None = None
    attempts: int = 0
    last_seek: float = float("-inf")


class OffsetGaps:
    """Per partition, the contiguous prefix of offsets processed, and the holes after it."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS, retry_s: float = RETRY_S) -> None:
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self._parts: dict[Hashable, _Partition] = {}

    def observe(
        self,
        tp: Hashable,
        generation: int,
        offset: int,
        now: float,
        committed: Callable[[Hashable], int | None] | None = None,
    ) -> Verdict:
        """Record that ``offset`` of ``tp`` reached the agent; say what to do about holes.

        ``committed`` gives the group's committed offset of ``tp``: asked only at
        the first offset of a new consumer generation, where the partition should
        resume. A first offset beyond it is a hole too (the one behind the
        committed offset that then never moves).
        """
        part = self._parts.get(tp)
        if part is None or part.generation != generation:
            start = committed(tp) if committed is not None else None
            part = self._parts[tp] = _Partition(generation, offset + 1)
            if start is None or offset <= start:
                return NOTHING
            part.frontier = start
        if offset < part.frontier or offset in part.ahead:
            return NOTHING  # a re-read after a seek, or a redelivery
        if offset == part.frontier:
            part.frontier += 1
            while part.frontier in part.ahead:
                part.ahead.discard(part.frontier)
                part.frontier += 1
            if part.hole is not None and not part.ahead:
                filled, part.hole, part.attempts = part.hole, None, 0
                part.last_seek = float("-inf")
                return Verdict(filled=filled)
            return NOTHING
        part.ahead.add(offset)
        if part.hole is None:
            part.hole = Hole(part.frontier, min(part.ahead) - 1)
        if now - part.last_seek < self.retry_s:
            return NOTHING
        if part.attempts < self.max_attempts:
            part.attempts += 1
            part.last_seek = now
            return Verdict(seek_to=part.frontier)
        # Given up: skip the hole, carry on from what was seen beyond it.
        abandoned = Hole(part.frontier, min(part.ahead) - 1)
        part.frontier = min(part.ahead)
        while part.frontier in part.ahead:
            part.ahead.discard(part.frontier)
            part.frontier += 1
        part.hole = Hole(part.frontier, min(part.ahead) - 1) if part.ahead else None
        part.attempts, part.last_seek = 0, float("-inf")
        return Verdict(abandoned=abandoned)
