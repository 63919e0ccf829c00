"""Offsets that never reached an agent, and re-reading them.

Within a consumer generation a partition's offsets should reach the agent in
order and without gaps; after a rebalance they sometimes did not, and Faust's
commit would pass the missing records (bench/RESULTS.md, "Stream worker: the
Faust bypasses"). :class:`OffsetGaps` (pure logic) notices a hole and says where
to seek back to; a re-read shows as offsets going back. A hole that
``MAX_ATTEMPTS`` re-reads pass without filling holds no record (transaction
markers, compaction) and is given up; a seek with no re-read within ``RETRY_S``
is repeated without counting. :class:`HoleWatch` does the seeking, logging and
counting for each agent, whose topics skip Faust's read-offset filter.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import faust
from faust.types.tuples import Message
from recstream.stream import faust_internals
from recstream.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: Re-reads that pass a hole without filling it before giving up on the hole.
MAX_ATTEMPTS = 3
#: Seconds after a seek with no re-read seen before seeking again (not counted
#: as an attempt): what was fetched before the seek is still being delivered.
RETRY_S = 2.0
#: Abandoned holes remembered per partition, so that a record of one that turns
#: up late is not taken for a repeat.
ABANDONED_KEPT = 16


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
    #: The offset was handled before in this consumer generation (a re-read or
    #: a redelivery): its outputs went out then.
    repeat: bool = False


NOTHING = Verdict()
REPEAT = Verdict(repeat=True)


class Runs:
    """A set of ints as sorted, disjoint, non-adjacent ``[start, end)`` runs.

    Offsets beyond a hole arrive mostly in order, so each one usually extends
    the last run: the size is the number of gaps among them, not their count.
    """

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: list[list[int]] = []

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __len__(self) -> int:
        """The number of runs (not of offsets)."""
        return len(self._runs)

    def __contains__(self, x: int) -> bool:
        i = bisect_right(self._runs, x, key=_start)
        return i > 0 and x < self._runs[i - 1][1]

    def add(self, x: int) -> None:
        runs = self._runs
        if runs and runs[-1][1] == x:  # the common case: the next offset in order
            runs[-1][1] = x + 1
            return
        i = bisect_right(runs, x, key=_start)
        left = runs[i - 1] if i > 0 else None
        if left is not None and x < left[1]:
            return  # already in
        right = runs[i] if i < len(runs) else None
        if left is not None and left[1] == x:
            left[1] = x + 1
            if right is not None and right[0] == x + 1:
                left[1] = right[1]
                del runs[i]
        elif right is not None and right[0] == x + 1:
            right[0] = x
        else:
            runs.insert(i, [x, x + 1])

    def first(self) -> int:
        """The least member (the set must not be empty)."""
        return self._runs[0][0]

    def take_run(self, x: int) -> int:
        """If a run starts at ``x``, remove it and return its end; else return ``x``."""
        runs = self._runs
        if runs and runs[0][0] == x:
            return runs.pop(0)[1]
        return x


def _start(run: list[int]) -> int:
    return run[0]


@dataclass
class _Partition:
    generation: int
    #: The next offset expected: every offset below it reached the agent.
    frontier: int
    #: The offset observed last: one at or below it starts a re-read.
    last_offset: int
    #: Offsets seen beyond a hole, waiting for the hole to fill.
    ahead: Runs = field(default_factory=Runs)
    #: The first hole noticed and not yet filled or abandoned.
    hole: Hole | None = None
    #: Re-reads that went past ``hole`` without filling it.
    skipped: int = 0
    last_seek: float = float("-inf")
    #: The newest holes given up on: below the frontier, yet never handled.
    abandoned: deque[Hole] = field(default_factory=lambda: deque(maxlen=ABANDONED_KEPT))

    def handled_below(self, offset: int) -> bool:
        """Whether ``offset``, below the frontier, reached the agent (in this generation)."""
        return not any(h.first <= offset <= h.last for h in self.abandoned)


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
        committed offset that then never moves). The verdict's ``repeat`` says
        whether ``offset`` was observed before in this generation.
        """
        part = self._parts.get(tp)
        re_read = False
        if part is None or part.generation != generation:
            start = committed(tp) if committed is not None else None
            part = self._parts[tp] = _Partition(generation, offset + 1, offset)
            if start is None or offset <= start:
                return NOTHING
            part.frontier = start
        else:
            re_read = offset <= part.last_offset
            part.last_offset = offset
        if offset < part.frontier:
            # A re-read of what was processed, or a redelivery.
            return REPEAT if part.handled_below(offset) else NOTHING
        if offset == part.frontier:
            return self._advance(part, now)
        repeat = offset in part.ahead
        part.ahead.add(offset)
        verdict = self._beyond(part, re_read, now)
        if not repeat:
            return verdict
        return REPEAT if verdict is NOTHING else verdict._replace(repeat=True)

    def _beyond(self, part: _Partition, re_read: bool, now: float) -> Verdict:
        """What to do about the hole, for an offset seen beyond the frontier."""
        if part.hole is None:
            part.hole = Hole(part.frontier, part.ahead.first() - 1)
            return self._seek(part, now)
        if re_read:
            # A re-read began past the hole: the fetch from its first offset
            # had nothing there.
            part.skipped += 1
            if part.skipped >= self.max_attempts:
                return self._abandon(part, now)
            return self._seek(part, now)
        if now - part.last_seek >= self.retry_s:
            return self._seek(part, now)
        return NOTHING

    @staticmethod
    def _seek(part: _Partition, now: float) -> Verdict:
        part.last_seek = now
        return Verdict(seek_to=part.frontier)

    @staticmethod
    def _advance(part: _Partition, now: float) -> Verdict:
        part.frontier = part.ahead.take_run(part.frontier + 1)
        if part.hole is None or part.frontier <= part.hole.last:
            return NOTHING
        filled, part.hole, part.skipped = part.hole, None, 0
        if part.ahead:
            # Another hole further on; the re-read under way goes on into it.
            part.hole = Hole(part.frontier, part.ahead.first() - 1)
            part.last_seek = now
        return Verdict(filled=filled)

    @staticmethod
    def _abandon(part: _Partition, now: float) -> Verdict:
        """Skip the hole; carry on from what was seen beyond it."""
        abandoned = Hole(part.frontier, part.ahead.first() - 1)
        part.abandoned.append(abandoned)
        part.frontier = part.ahead.take_run(part.ahead.first())
        part.hole, part.skipped = None, 0
        if part.ahead:
            part.hole = Hole(part.frontier, part.ahead.first() - 1)
            part.last_seek = float("-inf")  # sought at the next offset beyond it
        return Verdict(abandoned=abandoned)


class HoleWatch:
    """Call :meth:`check` with every message an agent receives, in order. It also
    tells a repeat (so a malformed record read again gets no second dead letter)."""

    def __init__(self, metrics: WorkerMetrics, app: faust.App) -> None:
        self._gaps = OffsetGaps()
        self._metrics = metrics
        self._app = app
        self._committed = partial(faust_internals.committed_offset, app)

    def check(self, message: Message) -> bool | Awaitable[bool]:
        """Whether ``message`` is a repeat in this generation; where there is a hole
        before it, an awaitable that acts on the hole first. (A plain call per
        message, a coroutine only for a hole.)"""
        verdict = self._gaps.observe(
            message.tp, message.generation_id or 0, message.offset, time.monotonic(),
            self._committed,
        )  # fmt: skip
        if verdict is NOTHING:
            return False
        if verdict is REPEAT:
            return True
        return self._on_hole(message, verdict)

    async def _on_hole(self, message: Message, verdict: Verdict) -> bool:
        where = f"{message.topic}[{message.partition}]"
        if verdict.filled is not None:
            self._metrics.offset_holes.labels("filled").inc()
            log.info("%s: offsets %d..%d re-read, hole filled", where, *verdict.filled)
        elif verdict.abandoned is not None:
            self._metrics.offset_holes.labels("abandoned").inc()
            await faust_internals.skip_offsets(self._app, message.tp, *verdict.abandoned)
            log.error(
                "%s: offsets %d..%d never arrived after re-reads; skipped (transaction "
                "markers or compaction leave such holes; otherwise those records are lost)",
                where, *verdict.abandoned,
            )  # fmt: skip
        elif verdict.seek_to is not None:
            self._metrics.offset_holes.labels("seek").inc()
            log.warning(
                "%s: offset %d arrived but %d did not; seeking back to re-read",
                where, message.offset, verdict.seek_to,
            )  # fmt: skip
            try:
                await self._app.consumer.seek(message.tp, verdict.seek_to)
            except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile; retried later
                log.warning("%s: seek to %d failed: %r", where, verdict.seek_to, exc)
        return verdict.repeat
