"""Faust's silent skipping of offset gaps, replaced by re-reading them.

When faust-streaming 0.15.3's consumer sees a partition's offsets jump (the
next record it drains is more than one past the last), it records the missing
offsets as a "gap" (``Consumer._add_gap``) and later counts them as
acknowledged, so a commit moves past them. That is meant for offsets no
record occupies (transaction markers, compaction). After a rebalance it also
happens to real records that were dropped (issue #7): the events were never
processed, yet the commit would cover them. And when such records are re-read
after all, the gap offsets and the re-read ones are both in Faust's acked list;
the duplicates break its run of consecutive offsets, and the committed offset
then creeps forward one or two offsets per commit (measured: stuck for minutes
after a takeover).

So the worker takes this decision itself: ``install`` turns Faust's automatic
gap recording off for this app's consumer, :mod:`stream.offset_gaps` re-reads
every hole, and only a hole that stays empty after the re-reads is handed to
Faust's gap bookkeeping (:meth:`FaustGaps.skip`), so the commit may pass it.
Why records go missing in the first place: Faust's fetch loop delivers a
record only if its offset is at least the partition's "read offset" (the last
offset delivered, or the target of the last seek), and sets the read offset
after each delivery. Records already fetched when a seek happens (the seek to
the committed offsets after a rebalance, or a re-read of a hole) are still
delivered after it, above the seek target, and move the read offset forward
again; the records the seek re-fetches then fall below it and are dropped.
Measured (issue #7): a hole after a takeover, and a re-read of it that did not
take three times running, so the hole was given up and an event lost. So
``install`` also stops the read-offset filter for the topics the worker
watches itself (``watched_topics``: events, their repartition topic,
user-deletions and recommendations, see stream.hole_watch): every fetched record reaches the agent. A re-read record is applied again and
found a duplicate (the table dedupes by ``event_id``; Faust acknowledges an
offset once), so a seek now always takes. Other topics (changelogs, whose
recovery counts on the filter) keep Faust's behaviour.

The patch is per app (nothing global) and touches private attributes; the
version is pinned below 0.16 and the scale-out test exercises it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

log = logging.getLogger(__name__)

AddGap = Callable[[Any, int, int], Awaitable[None]]


class ReadOffsets(defaultdict):
    """Faust's per-partition read offsets, with no filter for ``unfiltered`` topics.

    Faust's fetch loop drops a record whose offset is below ``read_offsets[tp]``;
    for these topics the lookup answers None (no read offset), so it drops
    none. What Faust stores is kept, so other topics behave as before.
    """

    def __init__(self, unfiltered: Iterable[str], offsets: dict[Any, int | None]) -> None:
        super().__init__(lambda: None, offsets)
        self.unfiltered = frozenset(unfiltered)

    def __getitem__(self, tp: Any) -> int | None:
        if tp.topic in self.unfiltered:
            return None
        return super().__getitem__(tp)


class FaustGaps:
    def __init__(self, app: faust.App, watched_topics: Iterable[str] = ()) -> None:
        self._app = app
        #: Topics whose holes stream.hole_watch re-reads (every agent's).
        self.watched_topics = frozenset(watched_topics)
        self._faust_add_gap: AddGap | None = None

    def install(self) -> None:
        """Hand the holes of the watched topics to the worker (call before start).

        Faust's consumer no longer records gaps on its own, and no longer drops
        re-read records of the watched topics (see the module's docstring).
        """
        consumer = self._app.consumer
        if self._faust_add_gap is not None:
            return
        self._faust_add_gap = consumer._add_gap
        # Before start: the fetch loop binds the mapping's methods when it starts.
        consumer._read_offset = ReadOffsets(self.watched_topics, dict(consumer._read_offset))

        async def not_yet(tp: Any, offset_from: int, offset_to: int) -> None:
            # Left unacknowledged: the commit waits until the hole is re-read
            # (or given up by stream.offset_gaps, which then calls skip()).
            log.debug("%s: offsets %d..%d skipped by the fetch", tp, offset_from, offset_to)

        consumer._add_gap = not_yet

    async def skip(self, tp: Any, first: int, last: int) -> None:
        """Let commits pass offsets ``first..last`` (inclusive): no record will fill them."""
        add_gap = self._faust_add_gap or self._app.consumer._add_gap
        await add_gap(tp, first, last)


def committed_offset(app: faust.App, tp: Any) -> int | None:
    """Faust's record of the group's committed offset of ``tp`` (None: not known yet).

    Private (``Consumer._committed_offset``, set by the seek to committed offsets
    after a rebalance and by each commit; no public accessor); faust-streaming is
    pinned below 0.16 and the scale-out test exercises this. Read by the
    offset-hole check (a wrong value costs a needless re-read at most) and the
    lag gauge. None as well where the consumer has no such record.
    """
    offset = getattr(app.consumer, "_committed_offset", {}).get(tp)
    return offset if isinstance(offset, int) else None
