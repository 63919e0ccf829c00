"""One admin request to the brokers, retried until they answer: the worker's start-up checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from schemas.settings import KafkaSettings

T = TypeVar("T")


class BrokerUnreachable(RuntimeError):
    """No admin request got an answer within the time given; ``last`` is the last failure."""

    def __init__(self, bootstrap: str, timeout_s: float, last: Exception) -> None:
        super().__init__(f"{bootstrap} did not answer within {timeout_s:.0f}s ({last!r})")
        self.last = last


def admin_call(kafka: KafkaSettings, call: Callable[[Any], T], timeout_s: float = 30.0) -> T:
    """``call(admin)`` on a fresh kafka-python admin client (with the security
    settings), retried every 0.5 s until it succeeds or ``timeout_s`` passed."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**kafka.kafka_python_kwargs(), request_timeout_ms=5000)
            try:
                return call(admin)
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable yet"
            if time.monotonic() >= deadline:
                raise BrokerUnreachable(kafka.bootstrap, timeout_s, exc) from exc
            time.sleep(0.5)
