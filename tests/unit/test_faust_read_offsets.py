"""The fetch loop and a seek: records fetched before it must not hide the re-read.

A stand-in ``getmany`` gives a first fetch of offsets 10..12; while 10 is
handled, the worker seeks back to 5 (a hole's re-read), and the next fetch
brings 5..13. Faust's own loop delivers 11 and 12 above the seek target, which
moves its read offset to 12, and then drops the re-read 5..11: the hole never
fills. The worker's loop (stream.faust_internals) delivers every record of the
agents' topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import TP
from recstream.stream import faust_internals

SOURCE = TP("events", 0)
OTHER = TP("some-changelog", 0)


class _Record:
    def __init__(self, tp: TP, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.key = self.value = b""


#: What the broker returns: a fetch before the seek, then the re-read from 5.
FETCHES = [[10, 11, 12], list(range(5, 14))]


async def _deliveries(tp: TP, patched: bool) -> list[int]:
    app = faust.App("read-offsets-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer = app.consumer
    if patched:  # the worker's loop, with the source topic exempt from the filter
        faust_internals.install_fetch_loop(app, unfiltered=[SOURCE.topic])
    fetches = iter(FETCHES)
    delivered: list[int] = []
    done = asyncio.Event()

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        try:
            offsets = next(fetches)
        except StopIteration:
            done.set()
            await asyncio.sleep(timeout)
            return
        for offset in offsets:
            yield tp, _Record(tp, offset)

    async def callback(message: Any) -> None:
        delivered.append(message.offset)
        if message.offset == 10 and len(delivered) == 1:
            # The worker's re-read of a hole at 5..9 (the broker side of the
            # seek is the second fetch).
            await consumer.seek(tp, 5)

    async def seek_at_broker(partition: TP, offset: int) -> None:
        pass

    consumer.getmany = getmany
    consumer.callback = callback
    consumer._seek = seek_at_broker
    fetcher = faust.Service()
    drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
    await asyncio.wait_for(done.wait(), 10)
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)
    return delivered


def test_faust_alone_drops_the_records_a_seek_re_reads() -> None:
    # The defect the worker's loop works around (faust-streaming pinned exactly):
    # if a release fixes it, this fails and the exemption can go.
    assert asyncio.run(_deliveries(SOURCE, patched=False)) == [10, 11, 12, 12, 13]


def test_patched_source_topics_get_every_record_after_a_seek() -> None:
    delivered = asyncio.run(_deliveries(SOURCE, patched=True))
    assert delivered == [10, 11, 12, *range(5, 14)]


def test_other_topics_keep_fausts_filter() -> None:
    assert asyncio.run(_deliveries(OTHER, patched=True)) == [10, 11, 12, 12, 13]
