"""The ``user_sequences`` table and how batched code writes to the right partition of it."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import faust
from faust.streams import _current_event  # see table_partition() for why
from faust.types import EventT, TableT

USER_SEQUENCES = "user_sequences"


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
