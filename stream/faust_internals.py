"""Every use of private parts of faust-streaming, aiokafka and Faust's RocksDB store.

Written against faust-streaming ``FAUST_VERSION`` exactly (pinned in pyproject.toml;
the worker refuses another version). A Faust upgrade means reviewing this module
against the new release, then moving the pin. Why each bypass exists, and what it
saved when measured: bench/RESULTS.md, "Stream worker: the Faust bypasses".
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, EventT, TableT

#: The faust-streaming release this module was written against.
FAUST_VERSION = "0.15.3"


class FaustVersionError(RuntimeError):
    """The installed faust-streaming is not the one this module was written against."""


def check_version() -> None:
    installed = version("faust-streaming")
    if installed != FAUST_VERSION:
        raise FaustVersionError(
            f"faust-streaming {installed} is installed, but the worker reaches into Faust's "
            f"internals as of {FAUST_VERSION} (recstream.stream.faust_internals): install "
            f"faust-streaming=={FAUST_VERSION}"
        )


# -- the fetch loop ---------------------------------------------------------------


class _Rest:
    """Awaiting it continues a coroutine that :func:`start` ran up to its first wait,
    as ``yield from`` would: values and exceptions (a cancellation) pass through."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on, as yield from does
                step, value = coro.throw, exc
            else:
                step, value = coro.send, sent
            try:
                waiting_on = step(value)
            except StopIteration as stop:
                return stop.value


def start(coro: Coroutine[Any, Any, Any]) -> _Rest | None:
    """Run ``coro`` up to its first wait: None if it finished, else the rest of it."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, waiting_on)


#: ``offer(message)`` takes a record past the conductor (stream.take.DirectIntake.offer).
Offer = Callable[[Any], Awaitable[Any] | None]


async def _drain_messages(
    self: Any, offers: Mapping[str, Offer], unfiltered: frozenset[str], fetcher: Any
) -> None:
    """``Consumer._drain_messages`` of faust-streaming 0.15.3 (BSD licence), ``self``
    the consumer, with three changes:

    * the conductor's callback runs up to its first wait in the loop; only one
      that waits goes through ``wait_first`` (four tasks per record in Faust's);
    * records of a topic in ``offers`` go to its offer instead of the conductor;
    * records of ``unfiltered`` topics skip the read-offset filter and the gap
      recording: stream.offset_gaps handles their holes (see :func:`skip_offsets`).
    """
    callback, getmany = self.callback, self.getmany
    offer_for = offers.get
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
            await self.sleep(0)  # as Faust: getmany may return at once in a loop
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > 100:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = None if tp.topic in unfiltered else get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        offer = offer_for(message.topic)
                        rest = offer(message) if offer is not None else start(callback(message))
                        if rest is not None:  # it waits: a rebalance or a stop frees the loop
                            await self.wait_first(rest, suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                     offset, message.key, message.value)  # fmt: skip
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def install_fetch_loop(
    app: faust.App, offers: Mapping[str, Offer] | None = None, unfiltered: Iterable[str] = ()
) -> None:
    """Use :func:`_drain_messages` for ``app``'s consumer (before the app starts)."""
    consumer = app.consumer
    consumer._drain_messages = functools.partial(
        _drain_messages, consumer, dict(offers or {}), frozenset(unfiltered)
    )


# -- the consumer's offset bookkeeping ------------------------------------------------


async def skip_offsets(app: faust.App, tp: TP, first: int, last: int) -> None:
    """Let commits pass ``first..last`` of ``tp`` (inclusive): Faust's gap record."""
    await app.consumer._add_gap(tp, first, last)


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The group's committed offset of ``tp`` as Faust last saw it (None: not known)."""
    offset = app.consumer._committed_offset.get(tp)
    return offset if isinstance(offset, int) else None


# -- tables -------------------------------------------------------------------------


@contextmanager
def table_partition(event: EventT) -> Iterator[None]:
    """Make Faust's table reads and writes in the block use ``event``'s partition.

    Faust takes the partition from the current event, which a batch taken
    outside stream iteration does not set (faust-streaming issue #497).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def rocksdb_store(table: TableT) -> Any:
    """Faust's RocksDB store of ``table`` (created on first use)."""
    store = table.data
    if not hasattr(store, "_db_for_partition"):
        raise TypeError(f"table {table.name} is not on Faust's RocksDB store: {store!r}")
    return store


def store_get(store: Any, partition: int, key: bytes) -> bytes | None:
    """What ``store[key]`` reads under an event of ``partition``, in one RocksDB call."""
    value: bytes | None = store._db_for_partition(partition).get(key)
    if value is not None:
        store._key_index[key] = partition
    return value


def store_put(store: Any, partition: int, key: bytes, value: bytes) -> None:
    """What ``store[key] = value`` does under an event of ``partition``, in one call."""
    store._key_index[key] = partition
    store._db_for_partition(partition).put(key, value)


def store_dbs(table: TableT) -> list[Any]:
    """The open RocksDB databases of ``table``'s store, one per partition."""
    return list(table.data._dbs.values())


# -- the producer ---------------------------------------------------------------------


def aiokafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's (its ``create_batch``/``send_batch``)."""
    return app.producer._ensure_producer()


def widen_producer_buffer(app: faust.App, max_messages: int) -> None:
    """Raise Faust's table-write buffer limit (a class constant, 100): above it
    the conductor holds every incoming record until the buffer drains."""
    app.producer.buffer.max_messages = max_messages


# -- the consumer's fetch settings and end offsets (the Tansu layer) -------------------


def set_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Create ``app``'s aiokafka consumer with this fetch wait (Faust hard-codes 1500 ms)."""
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_with_wait(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    thread._create_worker_consumer = create_with_wait


Highwaters = Callable[..., Awaitable[Mapping[Any, int]]]


def wrap_highwaters(app: faust.App, wrap: Callable[[Highwaters], Highwaters]) -> None:
    """Replace ``app``'s consumer ``highwaters``, where table recovery takes changelog ends."""
    consumer = app.consumer
    consumer.highwaters = wrap(consumer.highwaters)
