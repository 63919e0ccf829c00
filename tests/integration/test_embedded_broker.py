"""The embedded broker's start: quiet when all is well, quick and clear when not."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from recstream.broker import BrokerError, EmbeddedBroker, tansu_binary

pytestmark = [pytest.mark.integration, pytest.mark.tansu]


def test_a_slow_start_logs_no_client_errors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The readiness probe used to connect before Tansu listened: kafka-python then
    # logged "Connection failed ... ECONNREFUSED" at ERROR in demos and benches.
    # Here the broker takes a second to start listening, as on a loaded machine.
    slow = tmp_path / "slow-tansu"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{tansu_binary()}" "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setenv("RECSTREAM_TANSU_BIN", str(slow))
    with caplog.at_level(logging.WARNING):
        with EmbeddedBroker(partitions=1, topics=["events"]):
            pass
    noisy = [r for r in caplog.records if r.name.startswith("kafka")]
    assert not noisy, [r.getMessage() for r in noisy]


def test_a_taken_port_fails_at_once_with_the_reason() -> None:
    with socket.socket() as squatter:  # listens, but speaks no Kafka
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerError, match=f"exited .*port 127.0.0.1:{port} taken"):
            EmbeddedBroker(port=port, partitions=1, topics=["events"]).start(timeout_s=60)
        # Not the whole timeout: the broker's exit is noticed as it happens.
        assert time.monotonic() - started < 30
