"""One admin request to the brokers, retried until they answer: the worker's start-up checks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from recstream.schemas.settings import KafkaSettings, bounded_bootstrap

T = TypeVar("T")
log = logging.getLogger(__name__)


class BrokerUnreachable(RuntimeError):
    """No admin request got an answer within the time given; ``last`` is the last failure."""

    def __init__(self, bootstrap: str, timeout_s: float, last: Exception) -> None:
        super().__init__(f"{bootstrap} did not answer within {timeout_s:.0f}s ({last!r})")
        self.last = last


#: Seconds between the "still waiting" lines while the brokers do not answer.
WAITING_EVERY_S = 5.0


def admin_call(kafka: KafkaSettings, call: Callable[[Any], T], timeout_s: float = 30.0) -> T:
    """``call(admin)`` on a fresh kafka-python admin client (with the security
    settings), retried every 0.5 s until it succeeds or ``timeout_s`` passed.
    While it waits it logs one WARNING every :data:`WAITING_EVERY_S` with the
    last failure, instead of kafka-python's ERROR line per refused connection."""
    from kafka import KafkaAdminClient

    start = time.monotonic()
    deadline, next_note = start + timeout_s, start + WAITING_EVERY_S
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        while True:
            # Each attempt's bootstrap bounded: kafka-python 3's 30 s default alone
            # would overrun a shorter wait and hide every attempt after the first.
            left_ms = int(1000 * (deadline - time.monotonic()))
            attempt = {"request_timeout_ms": 5000,
                       **bounded_bootstrap(max(500, min(5000, left_ms)))}
            try:
                admin = KafkaAdminClient(**kafka.kafka_python_kwargs(), **attempt)
                try:
                    return call(admin)
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable yet"
                now = time.monotonic()
                if now >= deadline:
                    raise BrokerUnreachable(kafka.bootstrap, timeout_s, exc) from exc
                if now >= next_note:
                    log.warning("waiting for the brokers at %s (%.0fs of %.0fs): %r",
                                kafka.bootstrap, now - start, timeout_s, exc)
                    next_note = now + WAITING_EVERY_S
                time.sleep(0.5)
    finally:
        kafka_log.setLevel(level)
