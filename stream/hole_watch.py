"""Per agent: notice source offsets that never arrived, and re-read them.

:class:`HoleWatch` feeds each message's offset to
:class:`stream.offset_gaps.OffsetGaps` and acts on the verdict: seeks the
partition back, logs, counts ``recstream_worker_offset_holes_total``, and lets
the commit pass a hole given up on. Every agent has one: a missed event leaves
the table wrong, a missed deletion leaves a user remembered, and a hole in
``recommendations`` stalls that topic's commits. Their topics skip Faust's
read-offset filter (stream.faust_internals), so a seek back always re-reads.

It also says whether a message was handled before in this consumer
generation, so that a malformed record read again gets no second dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from functools import partial

import faust
from faust.types.tuples import Message
from recstream.stream import faust_internals
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import NOTHING, REPEAT, OffsetGaps, Verdict

log = logging.getLogger(__name__)


class HoleWatch:
    """Call :meth:`check` with every message an agent receives, in order."""

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
