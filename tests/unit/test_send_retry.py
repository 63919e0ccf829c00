"""The scorer's send loop: retriable Kafka errors are re-sent, others are raised."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)
from recstream.inference.service import retriable, send_all


class FlakyProducer:
    """Fails the first ``fail`` sends with ``error``, then acknowledges (pure logic only)."""

    def __init__(self, fail: int, error: Exception) -> None:
        self.fail = fail
        self.error = error
        self.delivered: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail > 0:
            self.fail -= 1
            fut.set_exception(self.error)
        else:
            self.delivered.append(value)
            fut.set_result(None)
        return fut


def test_retriable_errors() -> None:
    assert retriable(RequestTimedOutError())
    assert retriable(KafkaTimeoutError())
    assert retriable(UnknownTopicOrPartitionError())
    assert not retriable(MessageSizeTooLargeError())
    assert not retriable(ValueError("x"))


def test_failed_sends_are_resent_until_all_acknowledged() -> None:
    producer = FlakyProducer(fail=3, error=RequestTimedOutError())
    records = [(b"u%d" % i, b"v%d" % i) for i in range(5)]
    asyncio.run(send_all(producer, "t", records, retry_s=5))  # type: ignore[arg-type]
    assert sorted(producer.delivered) == sorted(v for _, v in records)


def test_non_retriable_error_is_raised_at_once() -> None:
    producer = FlakyProducer(fail=1, error=MessageSizeTooLargeError())
    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(send_all(producer, "t", [(b"u", b"v")], retry_s=5))  # type: ignore[arg-type]


def test_gives_up_after_the_retry_budget() -> None:
    producer = FlakyProducer(fail=10**6, error=RequestTimedOutError())
    with pytest.raises(RequestTimedOutError):
        asyncio.run(send_all(producer, "t", [(b"u", b"v")], retry_s=0.3))  # type: ignore[arg-type]
