"""The trainer's ``/healthz`` and ``/readyz``: real checks, not a metrics page.

Before, the trainer served its registry with prometheus_client's own server,
which answers every path with the metrics and 200, so a stuck trainer passed
its liveness probe and a starting one its readiness probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recstream.schemas.probes import ProbeServer
from recstream.trainer.continuous import STALLED_AFTER_S, ContinuousTrainer
from recstream.trainer.process_metrics import TrainerMetrics
from recstream.trainer.settings import TrainerSettings

from recstream.processes import http_status


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[ContinuousTrainer]:
    settings = TrainerSettings.from_env({
        "RECSTREAM_STATE_DIR": str(tmp_path / "state"),
        "RECSTREAM_MODEL_REGISTRY": str(tmp_path / "models"),
    })
    t = ContinuousTrainer(settings, threading.Event(), TrainerMetrics())
    yield t
    t.window.close()


def test_ready_only_once_consuming_and_not_after_stop(trainer: ContinuousTrainer) -> None:
    assert trainer.alive() and not trainer.ready()  # built, not polled yet
    trainer._polled = True  # what the loop sets when its first poll returns
    assert trainer.ready()
    trainer.stop.set()
    assert not trainer.ready()


def test_not_alive_when_the_loop_stalls(trainer: ContinuousTrainer) -> None:
    trainer._last_turn = time.monotonic() - STALLED_AFTER_S - 1
    assert not trainer.alive()
    trainer._last_turn = time.monotonic()
    assert trainer.alive()


def test_the_probe_server_answers_with_the_trainers_checks(trainer: ContinuousTrainer) -> None:
    server = ProbeServer(trainer.metrics.registry, 0, addr="127.0.0.1",
                         live=trainer.alive, ready=trainer.ready)
    try:
        assert http_status(server.port, "/readyz") == 503
        assert http_status(server.port, "/healthz") == 200
        assert http_status(server.port, "/nope") == 404
        trainer._polled = True
        assert http_status(server.port, "/readyz") == 200
        trainer._last_turn = time.monotonic() - STALLED_AFTER_S - 1
        assert http_status(server.port, "/healthz") == 503
        assert http_status(server.port, "/metrics") == 200
    finally:
        server.close()
