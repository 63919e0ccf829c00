"""The ``user_sequences`` table and how batched code writes to the right partition of it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import faust
from faust.streams import _current_event  # see table_partition() for why
from faust.types import EventT, TableT
from faust.types.tuples import FutureMessage

USER_SEQUENCES = "user_sequences"


#: The changelog sends of the table writes made in the current task (see changelog_sends).
_sends: ContextVar[list[FutureMessage] | None] = ContextVar(
    "recstream_changelog_sends", default=None
)


class DeliveredTable(faust.Table):  # type: ignore[misc]  # faust's classes are untyped
    """A Faust table whose changelog sends can be awaited by the code that wrote.

    Faust hands changelog records to a producer buffer and forgets them; before
    committing source offsets it calls ``producer.flush()``, whose buffer part
    gives up after 0.1 s without a send (``ProducerBuffer.flush_atmost``). On a
    busy machine a commit can therefore cover events whose changelog records
    are still in that buffer; a worker that dies or leaves then loses them,
    and the partition's next owner restores a state without those events and
    never sees them again (issue #7, the scale-out takeover bug). Awaiting the
    sends before a batch is acknowledged closes that gap: an acknowledged
    event's table update is durable in the changelog.
    """

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        sends = _sends.get()
        if sends is not None:
            sends.append(fut)
        return fut


@contextmanager
def changelog_sends() -> Iterator[list[FutureMessage]]:
    """Collect the changelog sends of :class:`DeliveredTable` writes made in the block.

    Per task (a context variable): the worker's agents run concurrently and
    each must wait for its own writes only.
    """
    sends: list[FutureMessage] = []
    token = _sends.set(sends)
    try:
        yield sends
    finally:
        _sends.reset(token)


async def delivered(sends: list[FutureMessage]) -> None:
    """Wait until every collected changelog record is stored by the broker (or raise)."""
    if sends:
        await asyncio.gather(*sends)


def define_table(app: faust.App, partitions: int) -> TableT:
    """User id (utf-8 bytes) -> encoded :class:`stream.sequence.UserSequence`."""
    return app.Table(
        USER_SEQUENCES,
        # bytes means Faust's "raw" codec both ways: the value is our own
        # compact codec, and a raw key is the same bytes as the ``events``
        # record key.
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        options={"driver": "rocksdict"},
    )


@contextmanager
def table_partition(event: EventT) -> Iterator[None]:
    """Make table reads and writes inside the block go to ``event``'s partition.

    A Faust table keeps each key in the store partition, and sends its changelog
    record to the partition, of the *current event* (a context variable that
    the stream sets while iterating). ``stream.take_events()`` fills its buffer
    in a background task, so inside the agent the current event is unset and a
    write raises "Cannot modify table key from outside of stream iteration"
    (faust-streaming issue #497). A batch also mixes partitions, so "the last
    event" would be wrong anyway. The agent therefore groups a batch by source
    partition and writes each group under one of that group's events.
    ``_current_event`` is private; faust-streaming is pinned below 0.16 and the
    functional tests exercise this path.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
