"""Shared fixtures. Integration fixtures start real components and stop them.

The ``broker`` fixture is Apache Kafka (KRaft, one node) unless a test is
marked ``tansu`` (the small tier that keeps the pip-only engine working) or
``RECSTREAM_TEST_ENGINE`` names another engine. On a machine without Java
outside CI the default is Tansu (the header says so); under CI a missing Java
or Kafka fails the tests, they never skip.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.broker import Broker, make_broker
from recstream.kafka_broker import java_binary


def default_engine() -> str:
    named = os.environ.get("RECSTREAM_TEST_ENGINE")
    if named:
        return named
    return "kafka" if os.environ.get("CI") or java_binary() else "tansu"


def pytest_configure(config: pytest.Config) -> None:
    """Give the tests' children a Ctrl-C to receive. A suite started as a background
    job (``cmd &`` in a shell without job control) runs with SIGINT ignored, and every
    child would inherit that: the Ctrl-C tests would wait on processes that cannot
    hear them. With a handler here, children start with the default again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header() -> str:
    return f"recstream broker engine for integration tests: {default_engine()}"


def engine_for(request: pytest.FixtureRequest) -> str:
    if request.node.get_closest_marker("tansu") is not None:
        return "tansu"
    return default_engine()


@pytest.fixture()
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker on free loopback ports, every topic created."""
    with make_broker(engine_for(request), tmp_path / "broker", partitions=4,
                     log_path=tmp_path / "broker.log") as b:
        yield b


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Broker]:
    """Three Kafka nodes on loopback: replication factor 3, min.insync.replicas 2."""
    with make_broker("kafka", tmp_path / "cluster", partitions=4, nodes=3,
                     log_path=tmp_path / "cluster.log") as b:
        yield b


@pytest.fixture()
def recstream_env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    """Environment for a child recstream process talking to the test broker."""
    env = dict(os.environ)
    env.update(
        RECSTREAM_KAFKA_BOOTSTRAP=broker.bootstrap,
        RECSTREAM_PARTITIONS=str(broker.partitions),
        RECSTREAM_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    return env
