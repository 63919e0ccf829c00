"""The quick start: ``recstream demo`` (what ``make demo`` runs) end to end.

Real broker, real worker, real scorer, each its own process. Needs the stream
worker (``stream.worker``); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recstream.processes import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ("--rate", "200", "--users", "300", "--items", "200")


def demo_argv(*args: str) -> list[str]:
    if importlib.util.find_spec("recstream.stream.worker") is None:
        pytest.fail(
            "the demo needs the stream worker (stream/worker.py), which is not in this tree"
        )
    return [str(Path(sys.executable).parent / "recstream"), "demo", *args]


def logs(run_dir: Path) -> str:
    parts = []
    for name in ("worker.log", "scorer.log", "trainer.log"):
        path = run_dir / name
        text = path.read_text(errors="replace") if path.exists() else "(missing)"
        parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-30:]))
    return "\n".join(parts)


@pytest.mark.parametrize(
    "engine", ["kafka", pytest.param("tansu", marks=pytest.mark.tansu)]
)  # fmt: skip
def test_demo_quick_start(tmp_path: Path, engine: str) -> None:
    """The whole loop on Kafka; on Tansu (the pip-only path) the stream without the trainer."""
    out, run_dir = tmp_path / "out.json", tmp_path / "run"
    stale = run_dir / "state" / "left-by-an-earlier-run"  # a reused --run-dir
    stale.mkdir(parents=True)
    # Long enough for the trainer's first version and its swap into the scorer.
    loop = ("--duration", "75") if engine == "kafka" else ("--duration", "20", "--no-trainer")
    argv = demo_argv("--engine", engine, *loop, "--json", str(out),
                     "--run-dir", str(run_dir), *SMALL)
    stdout_path = tmp_path / "stdout.txt"
    with stdout_path.open("w") as stdout:
        child = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                 cwd=tmp_path, env=child_env())  # fmt: skip
        # A damaged version published by hand mid-run: refused, the demo goes on.
        corrupted = _publish_damaged_version(stdout_path, run_dir, child) if engine == "kafka" else None
        if engine == "kafka":  # and the trainer dies: noted, the scorer serves on
            trainer = [pid for pid in _children_of(child.pid)
                       if b"trainer" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
            assert len(trainer) == 1, trainer
            os.kill(trainer[0], signal.SIGKILL)
        _, stderr = child.communicate(timeout=500)
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout_path.read_text(), stderr)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs(run_dir)}"
    summary = json.loads(out.read_text())
    assert summary["provenance"]["command"].startswith("recstream demo"), summary["provenance"]
    for key in (
        "events_in",
        "recommendations_out",
        "users_with_recommendations",
        "dlq",
        "p50_ms",
        "p99_ms",
    ):
        assert key in summary, key
    assert summary["engine"] == engine, summary
    assert summary["events_in"] > 1000, summary
    assert summary["recommendations_out"] > 0 and summary["users_with_recommendations"] > 0
    assert summary["dlq"] == summary["malformed_sent"] > 0, summary
    assert summary["p50_ms"] is not None and summary["p50_ms"] <= summary["p99_ms"]
    if engine == "kafka":
        _assert_versions(summary, run_dir)
        assert summary["refused"] >= 1, (corrupted, summary["refused"])
        assert summary["trainer"].startswith("trainer exited with code -9"), summary["trainer"]
        assert corrupted not in {r["version"] for r in summary["versions"]}
        assert f"refused {summary['refused']}," in " ".join(proc.stdout.split())  # shown
    else:
        assert [r["model"] for r in summary["versions"]] == ["cooccurrence"], summary
    assert "recstream demo summary" in proc.stdout
    assert "scorer stopped" in (run_dir / "scorer.log").read_text()
    assert not stale.exists()  # the new broker's worker started on empty state


def _publish_damaged_version(stdout: Path, run_dir: Path, child: subprocess.Popen[str]) -> str:
    """Once the trainer's first version is CURRENT, publish a version whose weights
    no longer match its manifest (not made CURRENT) and announce it as the
    trainer would; return its name."""
    import re

    from kafka import KafkaProducer
    from recstream.inference.model import ModelConfig, SeqRecModel
    from recstream.inference.model_dir import WEIGHTS, save_model_dir
    from recstream.inference.registry import Registry
    from recstream.schemas.topics import MODEL_UPDATES
    from recstream.trainer.publish import model_update

    reg = Registry(run_dir / "models")
    deadline = time.monotonic() + 300
    while not ((run_dir / "models" / "CURRENT").exists()
               and (found := re.search(r"broker on (\S+);", stdout.read_text()))):  # fmt: skip
        assert child.poll() is None and time.monotonic() < deadline, stdout.read_text()[-2000:]
        time.sleep(0.5)
    staged = reg.staging_dir()
    model = SeqRecModel(ModelConfig(n_items=3, max_len=4, d_model=4, n_heads=1, n_layers=1,
                                    use_text=False))  # fmt: skip
    save_model_dir(staged, model, ["a", "b", "c"], {})
    info = reg.publish(staged, make_current=False)
    (info.path / WEIGHTS).write_bytes(b"damaged in transit")
    producer = KafkaProducer(bootstrap_servers=found.group(1))
    update = model_update(info, "recstream")
    producer.send(MODEL_UPDATES, update.model_dump_json().encode(), key=b"recstream").get(30)
    producer.close()
    return info.version


def _assert_versions(summary: dict, run_dir: Path) -> None:
    """Per-version figures, at least one swap to a sequence version, no stall at a swap."""
    for key in ("versions", "swaps", "refused", "gate_decisions", "by_model"):
        assert key in summary, key
    rows = summary["versions"]
    assert rows and rows[0]["model"] == "cooccurrence", rows
    for row in rows:
        assert set(row) >= {"version", "model", "served_from_s", "online_hr10",
                            "online_ndcg10", "judged"}, row
    sequence = [r for r in rows if r["model"] == "sequence"]
    assert sequence, f"no sequence version served: {summary}\n{logs(run_dir)}"
    assert summary["swaps"] >= 1, summary
    assert any(d["published"] for d in summary["gate_decisions"]), summary["gate_decisions"]
    to_sequence = [c for c in summary["version_changes"] if not c["to"].startswith("cooc")]
    assert to_sequence, summary["version_changes"]
    # Recommendations never stopped during a swap: the lists kept coming across each change.
    for change in summary["version_changes"]:
        assert change["gap_ms"] < 5000, change
    assert summary["max_recommendation_gap_ms"] < 10_000, summary


def _children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    run_dir = tmp_path / "run"
    log = (tmp_path / "demo.out").open("w")
    proc = subprocess.Popen(
        demo_argv("--duration", "300", "--run-dir", str(run_dir), *SMALL),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=child_env(),
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while "pipeline ready" not in (tmp_path / "demo.out").read_text():
            assert proc.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, logs(run_dir)
            time.sleep(0.2)
        children = _children_of(proc.pid)
        assert len(children) >= 3, children  # broker, worker, scorer
        proc.send_signal(sig)
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            for pid in children:  # a failed stop leaves no orphans behind
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        log.close()
    assert code == 130, (tmp_path / "demo.out").read_text()
    left = [pid for pid in children if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"children still running after the demo exited: {left}"
