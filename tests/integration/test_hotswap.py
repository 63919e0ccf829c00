"""Hot-swap of model versions in a real scorer process, under a continuous stream.

A real broker, a real ``recstream scorer`` following a model registry, score
requests produced at a steady rate straight to ``score-requests``. Versions are
published one after another (rename into the registry, then a
``model-updates`` message); one is corrupted after publishing and one message
announces a wrong sha256. Checked: every request gets exactly one
recommendation across the swaps; per partition the served versions follow the
publish order and never go back; the corrupt artifact and the bad checksum are
refused (metric) and never served while serving goes on; a restarted scorer
comes up on the newest valid version, and follows a rollback message.

The versions are tiny and served by the eager torch backend, so no ONNX export
is needed and the test stays short; the ONNX Runtime path of a swap is what
``recstream bench hotswap`` runs (tests/integration/test_bench_hotswap.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from recstream.bench.hotswap import (
    TinyModel,
    Traffic,
    catalogue,
    collect,
    corrupt,
    metric,
    publish,
    scrape,
    send_update,
    stage_version,
    stream_requests,
)
from recstream.schemas import ModelUpdate

from recstream.broker import Broker
from recstream.processes import Child, free_port, recstream_command
from recstream.processes import wait_for_async as wait_for

pytestmark = pytest.mark.integration

SHAPE = TinyModel(n_items=60, max_len=12, d_model=16, n_heads=1, n_layers=1, text_dim=8)
K = 5
RATE = 40.0
#: Generous: a shared 2-core machine; the scorer imports torch and joins its group.
READY_S = 120.0
SWAP_S = 60.0
DONE_S = 60.0


def _env(recstream_env: dict[str, str], registry: Path, port: int, tmp: Path) -> dict[str, str]:
    return {
        **recstream_env,
        "RECSTREAM_MODEL_REGISTRY": str(registry),
        "RECSTREAM_SCORER_BACKEND": "torch",
        "RECSTREAM_TOP_K": str(K),
        "RECSTREAM_TORCH_THREADS": "1",
        "RECSTREAM_METRICS_PORT": str(port),
        "TMPDIR": str(tmp),
    }


def _refused(port: int, reason: str) -> float:
    return metric(scrape(port), "recstream_scorer_model_refused_total", reason=reason)


async def _scenario(bootstrap: str, registry: Path, staged: list[Path], first: str,
                    scorer: Child, port: int
                    ) -> tuple[Traffic, list[str], list[str], ModelUpdate]:
    """Stream requests while v2 is published, v3 published then corrupted, v4 announced
    once with a wrong sha256 and once right. Returns traffic, served and refused versions."""
    traffic = Traffic()
    stop_send, stop_collect = asyncio.Event(), asyncio.Event()
    collector = asyncio.create_task(collect(bootstrap, traffic, stop_collect, scorer))
    sender = asyncio.create_task(stream_requests(bootstrap, traffic, stop_send, RATE,
                                                 catalogue(SHAPE), 8))
    try:
        await wait_for(lambda: first in traffic.first_seen, READY_S, "first recommendation",
                       scorer)
        v2 = publish(registry, staged[0])
        await send_update(bootstrap, v2)
        await wait_for(lambda: v2.version in traffic.first_seen, SWAP_S, "v2 served", scorer)

        v3 = publish(registry, staged[1])
        corrupt(Path(v3.uri))  # after publishing: the manifest no longer matches
        await send_update(bootstrap, v3)
        await wait_for(lambda: _refused(port, "checksum") >= 1, SWAP_S, "v3 refused", scorer)

        v4 = publish(registry, staged[2])
        await send_update(bootstrap, v4.model_copy(update={"sha256": "0" * 64}))
        await wait_for(lambda: _refused(port, "checksum") >= 2, SWAP_S, "bad sha refused",
                       scorer)
        await send_update(bootstrap, v4)
        await wait_for(lambda: v4.version in traffic.first_seen, SWAP_S, "v4 served", scorer)
        await asyncio.sleep(1.0)  # some traffic on v4 too
        stop_send.set()
        await sender
        await wait_for(lambda: traffic.answered() == len(traffic.sent), DONE_S,
                       "every request answered", scorer)
        await asyncio.sleep(2.0)  # linger: a duplicate would show up now
    finally:
        stop_send.set()
        stop_collect.set()
        await asyncio.gather(sender, collector, return_exceptions=True)
    return traffic, [first, v2.version, v4.version], [v3.version], v2


async def _restarted(bootstrap: str, scorer: Child, n: int, rollback: ModelUpdate
                     ) -> tuple[set[str], set[str]]:
    """Versions of the restarted scorer's first ``n`` answers; then, after a rollback
    message (a newer message naming an older version), the versions of the rest."""
    traffic = Traffic()
    stop_send, stop_collect = asyncio.Event(), asyncio.Event()
    collector = asyncio.create_task(collect(bootstrap, traffic, stop_collect, scorer))
    # Fresh trigger ids: the restarted scorer's consumer group resumes after the old ones.
    sender = asyncio.create_task(stream_requests(bootstrap, traffic, stop_send, RATE,
                                                 catalogue(SHAPE), 8, seed=1, prefix="r"))
    try:
        await wait_for(lambda: sum(1 for t in traffic.sent if t in traffic.got) >= n, READY_S,
                       "restarted scorer answers", scorer)
        first = set(_first_versions(traffic, set()).values())
        before = set(traffic.got)
        await send_update(bootstrap, rollback.model_copy(update={"published_ms": int(
            time.time() * 1000)}))
        # Only this run's answers count: the collector reads the topic from the start, so
        # traffic.first_seen already holds the rollback version from the first scorer.
        await wait_for(lambda: rollback.version in _first_versions(traffic, before).values(),
                       SWAP_S, "rollback served", scorer)
        await asyncio.sleep(0.5)
    finally:
        stop_send.set()
        stop_collect.set()
        await asyncio.gather(sender, collector, return_exceptions=True)
    return first, set(_first_versions(traffic, before).values())


def _first_versions(traffic: Traffic, before: set[str]) -> dict[str, str]:
    """Trigger -> version of its first answer, for this run's triggers not in ``before``."""
    return {t: answers[0][1].model_version for t, answers in traffic.got.items()
            if t in traffic.sent and t not in before}


def test_hot_swaps_under_a_continuous_stream(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    registry = tmp_path / "registry"
    staged = [stage_version(registry, seed, SHAPE, onnx=False, k=K) for seed in range(4)]
    v1 = publish(registry, staged[0])
    asyncio.run(send_update(broker.bootstrap, v1))  # before start: the scorer catches up to it
    port = free_port()
    env = _env(recstream_env, registry, port, tmp_path)
    scorer = Child("scorer", recstream_command("scorer"), env, tmp_path / "scorer.log").start()
    try:
        traffic, served, refused, v2 = asyncio.run(
            _scenario(broker.bootstrap, registry, staged[1:], v1.version, scorer, port))
        metrics = scrape(port)
    finally:
        scorer.terminate()
        assert scorer.wait(30) == 0, scorer.describe_log()

    # Exactly one recommendation per request, across three swaps.
    assert len(traffic.sent) > 100
    missing = [t for t in traffic.sent if t not in traffic.got]
    doubled = {t: len(a) for t, a in traffic.got.items() if len(a) > 1}
    assert not missing and not doubled, (len(missing), doubled)
    # Served: v1, v2, v4 (each at least once), never v3; per partition in publish order.
    seen_versions = {a[1].model_version for answers in traffic.got.values() for a in answers}
    assert seen_versions == set(served), (seen_versions, served)
    order = {v: i for i, v in enumerate(served)}
    by_part: dict[int, list[tuple[int, int]]] = {}
    for answers in traffic.got.values():
        for _, rec, part, offset in answers:
            by_part.setdefault(part, []).append((offset, order[rec.model_version]))
    for part, rows in by_part.items():
        idx = [i for _, i in sorted(rows)]
        assert idx == sorted(idx), f"partition {part}: versions went back: {idx}"
    assert all(len(a[0][1].items) == K for a in traffic.got.values())
    # Refusals are counted; the swaps too.
    assert metric(metrics, "recstream_scorer_model_refused_total", reason="checksum") == 2
    assert metric(metrics, "recstream_scorer_model_swaps_total") == 2
    assert metric(metrics, "recstream_scorer_model_info", model_version=served[-1]) == 1
    assert metric(metrics, "recstream_scorer_model_swap_seconds_count") == 2
    assert 0 <= metric(metrics, "recstream_scorer_model_age_seconds") < 600
    log = scorer.log_tail(400)
    assert f"model update {refused[0]} refused (checksum)" in log

    # A restarted scorer catches up: it serves the newest valid version at once;
    # then a rollback (a newer message naming v2) is served: message order, not numbers.
    again = Child("scorer-2", recstream_command("scorer"), env, tmp_path / "scorer-2.log").start()
    try:
        first, later = asyncio.run(_restarted(broker.bootstrap, again, 20, v2))
    finally:
        again.terminate()
        assert again.wait(30) == 0, again.describe_log()
    assert first == {served[-1]}, first
    assert v2.version in later and later <= {served[-1], v2.version}, later
    assert time.monotonic() - started < 240
