"""Per message of an agent: notice source offsets that never arrived, and re-read them.

:class:`HoleWatch` feeds each message's offset to :class:`stream.offset_gaps.OffsetGaps`
and acts on its verdict: seeks the partition back, logs, counts
``recstream_worker_offset_holes_total``, and lets the commit pass a hole given
up on. Every agent of the worker uses one: the events agent (an event missing
from the table), the deletions agent (a user not forgotten) and the
recommendations agent (a hole there stalls the topic's commits, and its lag
gauge grows until a restart). Their topics are exempt from Faust's read-offset
filter (:mod:`stream.faust_gaps`), so a seek back always re-reads.

It also tells an agent whether a message was handled before in this consumer
generation (a re-read brings the records after a hole again): the table
dedupes a repeated event by its id anyway, but a malformed one would go to the
DLQ a second time, so the agents send no second letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types.tuples import Message
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import NOTHING, REPEAT, OffsetGaps, Verdict

log = logging.getLogger(__name__)

#: Seek a partition (a message's ``tp``) back to an offset.
Seek = Callable[[Any, int], Awaitable[None]]
#: Let commits pass a partition's offsets first..last (a hole given up on).
SkipHole = Callable[[Any, int, int], Awaitable[None]]


class HoleWatch:
    """Call :meth:`check` with every message an agent receives, in order."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        *,
        seek: Seek | None = None,
        committed: Callable[[Any], int | None] | None = None,
        skip_hole: SkipHole | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gaps = OffsetGaps()
        self._metrics = metrics
        self._seek = seek
        self._committed = committed
        self._skip_hole = skip_hole
        self._clock = clock

    def check(self, message: Message) -> bool | Awaitable[bool]:
        """Note ``message``'s offset. Whether it was handled before in this
        generation (a repeat), or, where there is a hole before it, an awaitable
        that acts on it (a seek back, a log line) and then says so. Per message
        a plain call, not a coroutine."""
        verdict = self._gaps.observe(
            message.tp, message.generation_id or 0, message.offset, self._clock(),
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
            if self._skip_hole is not None:
                await self._skip_hole(message.tp, *verdict.abandoned)
            log.error(
                "%s: offsets %d..%d never arrived after re-reads; skipped (transaction "
                "markers or compaction leave such holes; otherwise those records are lost)",
                where, *verdict.abandoned,
            )  # fmt: skip
        elif verdict.seek_to is not None and self._seek is not None:
            self._metrics.offset_holes.labels("seek").inc()
            log.warning(
                "%s: offset %d arrived but %d did not; seeking back to re-read",
                where, message.offset, verdict.seek_to,
            )  # fmt: skip
            try:
                await self._seek(message.tp, verdict.seek_to)
            except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile; retried later
                log.warning("%s: seek to %d failed: %r", where, verdict.seek_to, exc)
        return verdict.repeat
