"""The scorer service end to end: Kafka in, Kafka out, users/s from a backlog.

A real broker (Kafka or Tansu), a real ``recstream scorer`` process, a backlog of
score requests produced before the scorer starts. Throughput is measured
between the first and the last recommendation received (start-up, export and
group join excluded), for a MovieLens-1M-shaped model served through a
compiled backend. The baseline, measured in the same run, is the same model's
``recommend()`` called in-process on the same requests and batch size: the
ratio says what Kafka, JSON and the service loop cost on top of scoring.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.bench.jsonio import write_report
from recstream.schemas import ScoreRequest
from recstream.schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS

from recstream.broker import make_broker
from recstream.processes import Child, recstream_command

T0 = 1_700_000_000_000
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ServiceRow:
    path: str
    backend: str
    seq_len: int
    requests: int
    users_per_s: float
    batch: int


def _requests(n: int, seq_len: int, catalogue: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for u in range(n):
        items = [rng.choice(catalogue) for _ in range(seq_len)]
        ts = [T0 + 60_000 * j for j in range(seq_len)]
        out.append(ScoreRequest(
            user_id=f"u{u}", items=items, ts=ts, event_types=["view"] * seq_len,
            trigger_event_id=f"t{u}", trigger_ts=ts[-1], ingest_ms=ts[-1],
        ).model_dump_json().encode())
    return out


async def _produce(bootstrap: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        for n, v in enumerate(values):
            await producer.send(SCORE_REQUESTS, v, key=f"u{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _drain(bootstrap: str, n: int, child: Child) -> float:
    """Seconds between the first and the n-th recommendation."""
    consumer = AIOKafkaConsumer(RECOMMENDATIONS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    seen, first, deadline = 0, 0.0, time.monotonic() + TIMEOUT_S
    try:
        while seen < n:
            child.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen}/{n} recommendations in {TIMEOUT_S}s\n"
                                   f"{child.describe_log()}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                if records and seen == 0:
                    first = time.monotonic()
                seen += len(records)
        return time.monotonic() - first
    finally:
        await consumer.stop()


def _ml1m_model_dir(root: Path, age_bias_layers: str) -> Path:
    from recstream.bench.scorer import ml1m_shape_model
    from recstream.inference.export import export_model_dir
    from recstream.inference.model_dir import save_model_dir

    model = ml1m_shape_model(0, age_bias_layers)
    out = root / "ml1m-shape"
    save_model_dir(out, model, [f"i{n}" for n in range(model.cfg.n_items)], {})
    export_model_dir(out, fp16=False)  # the scorer reuses the export in the version dir
    return out


def run_service_bench(
    *, requests: int = 5000, seq_len: int = 200, batch: int = 256, backend: str = "auto",
    threads: int | None = None, root: Path | None = None, model_dir: Path | None = None,
    age_bias_layers: str = "last",  # ModelConfig's default
    engine: str = "auto",
) -> dict[str, Any]:
    """``model_dir``: a model version to serve; default a MovieLens-1M-shaped one
    (with ``age_bias_layers``). ``engine``: the broker's (auto, kafka, tansu)."""
    from recstream.inference.model_dir import CONFIG, ITEM_IDS

    root = Path(root or tempfile.mkdtemp(prefix="recstream-bench-service-"))
    root.mkdir(parents=True, exist_ok=True)
    model_dir = Path(model_dir) if model_dir is not None else _ml1m_model_dir(root, age_bias_layers)
    catalogue = json.loads((model_dir / ITEM_IDS).read_text())
    values = _requests(requests, seq_len, catalogue, 0)
    in_process = _in_process(model_dir, values, batch, backend, threads)
    shutil.rmtree(root / "kafka", ignore_errors=True)  # a reused root: a fresh broker
    broker = make_broker(engine, root, partitions=4, log_path=root / "broker.log")
    with broker:
        asyncio.run(_produce(broker.bootstrap, values))
        env = {
            **os.environ, "RECSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RECSTREAM_SCORER_BATCH": str(batch), "RECSTREAM_SCORER_BACKEND": backend,
            "RECSTREAM_MODEL_DIR": str(model_dir), "TMPDIR": str(root),
        }
        if threads:
            env["RECSTREAM_TORCH_THREADS"] = str(threads)
        child = Child("scorer", recstream_command("scorer"), env, root / "scorer.log").start()
        try:
            seconds = asyncio.run(_drain(broker.bootstrap, requests, child))
        finally:
            child.terminate()
            if child.wait(30) is None:
                child.kill()
    used = in_process.backend
    service = ServiceRow("service (Kafka in/out)", used, seq_len, requests,
                         round((requests - 1) / seconds, 1), batch)
    return {
        "engine": broker.engine,
        "rows": [asdict(in_process), asdict(service)],
        "service_users_per_s": service.users_per_s,
        "in_process_users_per_s": in_process.users_per_s,
        "service_over_in_process": round(service.users_per_s / in_process.users_per_s, 3),
        "ort_attention_budget": _ort_attention_budget(used),
        "model": {"dir": str(model_dir), "config": json.loads((model_dir / CONFIG).read_text())},
    }


def _ort_attention_budget(backend: str) -> int | None:
    """The row-chunk budget both runs used (RECSTREAM_ORT_ATTENTION_BUDGET); None: whole batches."""
    if not backend.startswith("onnxruntime"):
        return None
    from recstream.inference.backends.onnxruntime_backend import attention_budget_from_env

    return attention_budget_from_env()


def _in_process(
    model_dir: Path, values: list[bytes], batch: int, backend: str, threads: int | None
) -> ServiceRow:
    """The same model's ``recommend()`` on the same requests, no Kafka: the baseline."""
    from recstream.inference.sequence_recommender import load

    rec = load(model_dir, backend=backend, threads=threads)
    reqs = [ScoreRequest.model_validate_json(v) for v in values]
    rec.recommend(reqs[:batch], 10)  # warm-up: first-call allocations, lazy init
    started = time.perf_counter()
    for i in range(0, len(reqs), batch):
        rec.recommend(reqs[i : i + batch], 10)
    seconds = time.perf_counter() - started
    seq_len = len(reqs[0].items)
    return ServiceRow("recommend() in-process", rec.backend.name, seq_len, len(reqs),
                      round(len(reqs) / seconds, 1), batch)


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'path':<24} {'backend':<12} {'L':>4} {'batch':>5} {'requests':>8} {'users/s':>9}"]
    for r in report["rows"]:
        lines.append(f"{r['path']:<24} {r['backend']:<12} {r['seq_len']:>4} {r['batch']:>5} "
                     f"{r['requests']:>8} {r['users_per_s']:>9.1f}")
    lines.append(f"service / in-process: {report['service_over_in_process']:.3f}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    write_report(path, report, [report["engine"]] if "engine" in report else [])
