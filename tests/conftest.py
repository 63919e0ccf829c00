"""Shared fixtures. Integration fixtures start real components and stop them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.broker import EmbeddedBroker


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh embedded Tansu broker on a free loopback port, topics created."""
    b = EmbeddedBroker(partitions=4, log_path=tmp_path / "broker.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture()
def recstream_env(broker: EmbeddedBroker, tmp_path: Path) -> dict[str, str]:
    """Environment for a child recstream process talking to the test broker."""
    env = dict(os.environ)
    env.update(
        RECSTREAM_KAFKA_BOOTSTRAP=broker.bootstrap,
        RECSTREAM_PARTITIONS=str(broker.partitions),
        RECSTREAM_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    return env
