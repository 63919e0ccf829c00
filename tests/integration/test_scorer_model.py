"""The scorer process serving a trained sequence model through a compiled backend.

Train a tiny model on generated data with the real CLI, start the real scorer
with ``RECSTREAM_MODEL_DIR`` and ``RECSTREAM_SCORER_BACKEND=onnxruntime``, and
check over the real broker that every request gets one recommendation stamped
with the model's version, with k items and none of the user's history, and that
the learned pattern shows (the next item of the chain ranks first far above
chance).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.schemas import Event, Recommendation, ScoreRequest
from recstream.schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS
from recstream.trainer.data import write_event_log
from typer.testing import CliRunner

from recstream.broker import Broker
from recstream.processes import Child, recstream_command

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
N_ITEMS = 30
K = 5
DEADLINE_S = 180.0


def _chain_events(n_users: int, rng: random.Random) -> list[Event]:
    """Item i is followed by i + 1: a pattern popularity cannot see."""
    events = []
    for u in range(n_users):
        item, ts = rng.randrange(N_ITEMS), T0 + rng.randrange(10**8)
        for n in range(rng.randint(8, 14)):
            events.append(Event(event_id=f"e{u}-{n}", user_id=f"u{u}", item_id=f"i{item}",
                                event_type="view", ts=ts))
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else rng.randrange(N_ITEMS)
            ts += rng.randrange(1_000, 600_000)
    return events


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One model for the module's tests (neither writes into it): training is most of
    their time."""
    from recstream.cli import app

    tmp_path = tmp_path_factory.mktemp("trained")
    log = tmp_path / "events.jsonl"
    write_event_log(log, _chain_events(150, random.Random(0)))
    out = tmp_path / "model"
    res = CliRunner().invoke(app, [
        "train", "--data", str(log), "--out", str(out), "--max-len", "16", "--d-model", "32",
        "--max-epochs", "30", "--patience", "4", "--lr", "3e-3", "--batch-size", "32",
        "--dropout", "0.1", "--threads", "1", "--no-progress",
    ])
    assert res.exit_code == 0, res.output
    version = json.loads((out / "config.json").read_text())["version"]
    return out, version


def _request(n: int, rng: random.Random) -> ScoreRequest:
    start = rng.randrange(N_ITEMS)
    items = [f"i{(start + j) % N_ITEMS}" for j in range(6)]
    ts = [T0 + 10**9 + 60_000 * j for j in range(6)]
    return ScoreRequest(user_id=f"s{n}", items=items, ts=ts, event_types=["view"] * 6,
                        trigger_event_id=f"t{n}", trigger_ts=ts[-1], ingest_ms=ts[-1])


async def _roundtrip(bootstrap: str, reqs: list[ScoreRequest], scorer: Child) -> dict:
    consumer = AIOKafkaConsumer(RECOMMENDATIONS, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    got: dict[str, list[Recommendation]] = {}
    try:
        for r in reqs:
            await producer.send(SCORE_REQUESTS, r.model_dump_json().encode(),
                                key=r.user_id.encode())
        await producer.flush()
        deadline = time.monotonic() + DEADLINE_S
        wanted = {r.trigger_event_id for r in reqs}
        done_at = None
        while done_at is None or time.monotonic() - done_at < 2.0:  # linger: catch doubles
            scorer.check_alive()
            assert time.monotonic() < deadline, (
                f"{len(wanted - got.keys())} requests unanswered\n{scorer.describe_log()}"
            )
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for rec in records:
                    value = Recommendation.model_validate_json(rec.value)
                    got.setdefault(value.trigger_event_id, []).append(value)
            if done_at is None and wanted <= got.keys():
                done_at = time.monotonic()
    finally:
        await producer.stop()
        await consumer.stop()
    return got


def test_scorer_serves_a_trained_model_through_onnxruntime(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path, trained: tuple[Path, str]
) -> None:
    model_dir, version = trained
    env = {
        **recstream_env,
        "RECSTREAM_MODEL_DIR": str(model_dir),
        "RECSTREAM_SCORER_BACKEND": "onnxruntime",
        "RECSTREAM_TOP_K": str(K),
        "RECSTREAM_TORCH_THREADS": "1",
        "TMPDIR": str(tmp_path),  # exports made on the fly stay in the test's folder
    }
    scorer = Child("scorer", recstream_command("scorer"), env, tmp_path / "scorer.log").start()
    try:
        reqs = [_request(n, random.Random(n)) for n in range(120)]
        got = asyncio.run(_roundtrip(broker.bootstrap, reqs, scorer))
    finally:
        scorer.terminate()
        if scorer.wait(30) is None:
            scorer.kill()
    hits = 0
    for r in reqs:
        (rec,) = got[r.trigger_event_id]  # exactly one each
        ranked = [x.item_id for x in rec.items]
        assert rec.model_version == version
        assert len(ranked) == K and not set(ranked) & set(r.items)
        nxt = f"i{(int(r.items[-1][1:]) + 1) % N_ITEMS}"
        hits += ranked[0] == nxt
    # Chance is 1/24 for the first slot; a model that learned the chain is far above.
    assert hits / len(reqs) > 0.5, f"next item ranked first in only {hits}/{len(reqs)}"
    assert "onnxruntime" in scorer.log_tail(400)


def test_bench_scorer_service_measures_the_service_and_its_baseline(
    tmp_path: Path, trained: tuple[Path, str]
) -> None:
    """`recstream bench scorer-service` (README) on a tiny model: both rows measured,
    every request answered (the bench waits for all of them), ratio derived from them."""
    from recstream.bench.scorer_service import run_service_bench

    model_dir, _ = trained
    report = run_service_bench(requests=200, seq_len=8, batch=32, backend="onnxruntime",
                               threads=1, root=tmp_path / "bench", model_dir=model_dir)
    service, baseline = report["service_users_per_s"], report["in_process_users_per_s"]
    assert service > 0 and baseline > 0
    assert report["service_over_in_process"] == round(service / baseline, 3)
    assert [r["backend"] for r in report["rows"]] == ["onnxruntime", "onnxruntime"]
    assert all(r["requests"] == 200 and r["seq_len"] == 8 for r in report["rows"])
    assert report["ort_attention_budget"] == 1_500_000  # the default, recorded with the figures
    assert report["model"]["dir"] == str(model_dir)
    assert report["model"]["config"]["age_bias_layers"] == "last"  # the default
