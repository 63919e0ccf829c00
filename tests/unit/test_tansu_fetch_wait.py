"""The worker's fetch wait is RECSTREAM_FETCH_WAIT_MS on every broker (Faust
hard-codes 1500 ms); the Tansu layer alone corrects the end offsets its recovery
reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from recstream.stream import tansu_compat
from recstream.stream.app import create_app
from recstream.stream.settings import WorkerSettings


async def _fetch_wait(tmp_path: Path, tansu: bool, **settings: int) -> tuple[int, bool]:
    worker_settings = WorkerSettings(state_dir=tmp_path / "state", worker_id="t", **settings)
    worker = create_app(worker_settings, tansu=tansu)
    app = worker.app
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        corrected = isinstance(app.consumer.highwaters, tansu_compat.CorrectedHighwaters)
        return consumer._fetch_max_wait_ms, corrected
    finally:
        await consumer.stop()


@pytest.mark.parametrize("tansu, settings, expected", [
    (True, {}, (tansu_compat.TANSU_FETCH_MAX_WAIT_MS, True)),
    (True, {"fetch_wait_ms": 35}, (35, True)),  # the worker's RECSTREAM_FETCH_WAIT_MS
    (False, {"fetch_wait_ms": 35}, (35, False)),
    (False, {}, (tansu_compat.TANSU_FETCH_MAX_WAIT_MS, False)),
])  # fmt: skip
def test_the_fetch_wait_is_ours_and_the_end_offsets_change_against_tansu_only(
    tmp_path: Path, tansu: bool, settings: dict[str, int], expected: tuple[int, bool]
) -> None:
    assert asyncio.run(_fetch_wait(tmp_path, tansu, **settings)) == expected
