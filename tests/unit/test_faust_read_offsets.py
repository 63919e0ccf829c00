"""Faust's fetch loop and a seek: records fetched before it no longer hide the re-read.

Runs faust-streaming's own ``Consumer._drain_messages`` (the loop that hands
fetched records to the agents) on records given by a stand-in ``getmany``: a
first fetch holds offsets 10..12 of a source partition; while offset 10 is
handled, the worker seeks back to 5 (a hole re-read); the next fetch brings
5..13, as the broker would after the seek. Without the worker's patch Faust
delivers the rest of the first fetch (11, 12) above the seek target, which
moves its read offset to 12, and then drops the re-read 5..11: the hole
never fills (issue #7, the scale-out flake that lost an event). With the
patch, every record of the source topics reaches the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.types import TP
from recstream.stream import faust_drain
from recstream.stream.faust_gaps import FaustGaps, ReadOffsets

SOURCE = TP("events", 0)
OTHER = TP("some-changelog", 0)


class _Record:
    def __init__(self, tp: TP, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.key = self.value = b""


#: What the broker returns: a fetch before the seek, then the re-read from 5.
FETCHES = [[10, 11, 12], list(range(5, 14))]


async def _deliveries(tp: TP, patched: bool, our_loop: bool = False) -> list[int]:
    app = faust.App("read-offsets-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer = app.consumer
    if patched:
        FaustGaps(app, [SOURCE.topic]).install()
    if our_loop:  # the worker's fetch loop (stream.faust_drain) keeps the filter's rules
        faust_drain.install(app)
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
    # The defect the patch works around (faust-streaming pinned below 0.16):
    # if a release fixes it, this fails and the patch can go.
    assert asyncio.run(_deliveries(SOURCE, patched=False)) == [10, 11, 12, 12, 13]


@pytest.mark.parametrize("our_loop", [False, True], ids=["faust-loop", "worker-loop"])
def test_patched_source_topics_get_every_record_after_a_seek(our_loop: bool) -> None:
    delivered = asyncio.run(_deliveries(SOURCE, patched=True, our_loop=our_loop))
    assert delivered == [10, 11, 12, *range(5, 14)]


@pytest.mark.parametrize("our_loop", [False, True], ids=["faust-loop", "worker-loop"])
def test_other_topics_keep_fausts_filter(our_loop: bool) -> None:
    assert asyncio.run(_deliveries(OTHER, patched=True, our_loop=our_loop)) == [10, 11, 12, 12, 13]


@pytest.mark.parametrize("tp, expected", [(SOURCE, None), (OTHER, 7)])
def test_read_offsets_keep_what_faust_stores(tp: TP, expected: int | None) -> None:
    offsets = ReadOffsets([SOURCE.topic], {})
    offsets[SOURCE] = offsets[OTHER] = 7
    assert offsets[tp] == expected
    assert offsets[TP("unseen", 0)] is None  # Faust's default: no read offset yet
    assert offsets.pop(SOURCE) == 7  # its bookkeeping (revoke) still works
