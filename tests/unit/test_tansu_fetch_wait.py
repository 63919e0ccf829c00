"""The Tansu layer shortens this app's fetch wait (Tansu holds fetches for the
whole wait even when records are there; Faust hard-codes 1500 ms)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from recstream.stream import tansu_compat


class _FakeThread:
    def _create_worker_consumer(self, transport: Any) -> SimpleNamespace:
        return SimpleNamespace(_fetch_max_wait_ms=1500, transport=transport)


def test_install_shortens_the_fetch_wait_of_this_apps_consumer_only() -> None:
    async def highwaters(*tps: Any) -> dict:
        return {}

    thread = _FakeThread()
    other = _FakeThread()
    app = SimpleNamespace(consumer=SimpleNamespace(highwaters=highwaters, _thread=thread))
    kafka = tansu_compat.KafkaSettings(broker_compat="tansu")
    tansu_compat.install(app, kafka)
    consumer = thread._create_worker_consumer("t")
    assert consumer._fetch_max_wait_ms == tansu_compat.TANSU_FETCH_MAX_WAIT_MS
    assert consumer.transport == "t"
    assert other._create_worker_consumer("t")._fetch_max_wait_ms == 1500
    # Idempotent: a second install wraps nothing twice.
    tansu_compat.install(app, kafka)
    assert isinstance(app.consumer.highwaters, tansu_compat.CorrectedHighwaters)


def test_install_takes_the_workers_fetch_wait() -> None:
    async def highwaters(*tps: Any) -> dict:
        return {}

    thread = _FakeThread()
    app = SimpleNamespace(consumer=SimpleNamespace(highwaters=highwaters, _thread=thread))
    tansu_compat.install(app, tansu_compat.KafkaSettings(broker_compat="tansu"), fetch_wait_ms=35)
    assert thread._create_worker_consumer("t")._fetch_max_wait_ms == 35
