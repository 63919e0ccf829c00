"""The ``recstream`` console script: its commands, and the broker's life cycle."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from recstream.schemas.jsonschema import render_all
from recstream.schemas.topics import ALL_TOPIC_NAMES

from recstream.processes import Child, child_env, free_port

pytestmark = pytest.mark.integration

START_S = 60.0


def recstream_bin() -> str:
    path = Path(sys.executable).parent / "recstream"
    assert path.exists(), f"console script {path} missing: run `pip install -e .`"
    return str(path)


def run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [recstream_bin(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(COLUMNS="120", **env),
    )


def test_help_lists_the_subcommands() -> None:
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for command in ("broker", "worker", "scorer", "demo", "schemas"):
        assert command in out.stdout, f"{command} missing from:\n{out.stdout}"
    sub = run("schemas", "--help")
    assert sub.returncode == 0 and "export" in sub.stdout


def test_schemas_export_writes_every_schema(tmp_path: Path) -> None:
    out = run("schemas", "export", str(tmp_path))
    assert out.returncode == 0, out.stderr
    expected = render_all()
    assert {p.name for p in tmp_path.iterdir()} == set(expected)
    assert all((tmp_path / name).read_text() == text for name, text in expected.items())


def test_a_bad_log_level_is_a_usage_error() -> None:
    out = run("--log-level", "chatty", "worker", timeout=60)
    assert out.returncode == 2 and "no log level" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_worker_without_a_broker_says_so_and_exits_1(tmp_path: Path) -> None:
    """No broker at the bootstrap address: one clear message, no traceback, and
    none of kafka-python's ERROR line per refused connection (ten a second)."""
    out = run("worker", timeout=60, RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
              RECSTREAM_BROKER_WAIT_S="6", RECSTREAM_WORKER_ID="w-probe",
              RECSTREAM_STATE_DIR=str(tmp_path / "state"))  # not ./state in the checkout
    assert out.returncode == 1, out.stderr
    assert "no broker at 127.0.0.1:" in out.stderr and "RECSTREAM_BROKER_WAIT_S" in out.stderr
    assert "Traceback" not in out.stderr and "ECONNREFUSED (" not in out.stderr, out.stderr
    # What it said while it waited, on a line that names the worker.
    assert "WARNING w-probe recstream.stream.kafka_admin: waiting for the brokers at" in out.stderr


def wait_for_line(child: Child, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in child.log_tail(200):
        child.check_alive()
        assert time.monotonic() < deadline, (
            f"no {text!r} within {timeout_s}s\n{child.describe_log()}"
        )
        time.sleep(0.1)


def test_broker_serves_topics_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    probes = free_port()
    argv = [recstream_bin(), "broker", "--port", str(port), "--partitions", "2",
            "--data-dir", str(tmp_path / "data")]
    argv += ["--metrics-port", str(probes)]
    broker = Child("broker", argv, child_env(), tmp_path / "broker.log").start()
    try:
        wait_for_line(broker, f"RECSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:{port}", START_S)
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        try:
            assert set(ALL_TOPIC_NAMES) <= set(admin.list_topics())
        finally:
            admin.close()
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{probes}{path}", timeout=5) as r:
                assert r.status == 200, path
        with urllib.request.urlopen(f"http://127.0.0.1:{probes}/metrics", timeout=5) as r:
            assert "recstream_broker_up 1.0" in r.read().decode()
        broker.terminate()
        code = broker.wait(30)
    finally:
        broker.kill()
    assert code == 0, broker.describe_log()
    assert "broker stopped" in broker.log_tail()
    # Tansu went with it: the port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_broker_refuses_a_taken_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = run("broker", "--port", str(s.getsockname()[1]), timeout=60)
    assert out.returncode == 2 and "cannot listen" in out.stderr, out.stderr


def test_bad_settings_are_a_usage_error_not_a_traceback() -> None:
    out = run("scorer", RECSTREAM_TOP_K="many", timeout=60)
    assert out.returncode == 2, out.stderr
    assert "bad settings: RECSTREAM_TOP_K must be an integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_scorer_without_a_broker_says_so_and_exits_1() -> None:
    out = run("scorer", timeout=90, RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert out.returncode == 1, out.stderr
    assert "scorer: no broker at 127.0.0.1:" in out.stderr
    # No traceback, and no "Unclosed AIOKafkaProducer" on top of the real error.
    assert "Traceback" not in out.stderr and "Unclosed" not in out.stderr, out.stderr


@pytest.mark.parametrize("process", ["worker", "scorer", "trainer", "broker"])
def test_a_taken_metrics_port_is_named(process: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        own = ["--port", str(free_port())] if process == "broker" else []
        out = run(process, *own, timeout=90, RECSTREAM_METRICS_PORT=str(port),
                  RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                  RECSTREAM_BROKER_COMPAT="off", RECSTREAM_BROKER_WAIT_S="1",
                  RECSTREAM_STATE_DIR=str(tmp_path / "state"),
                  **({"RECSTREAM_MODEL_REGISTRY": str(tmp_path / "models")}
                     if process == "trainer" else {}))
    assert out.returncode == 2, out.stderr
    assert f"cannot serve /metrics, /healthz and /readyz on 0.0.0.0:{port}" in out.stderr
    assert "RECSTREAM_METRICS_PORT" in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("damage", ["truncated weights", "config not an object",
                                    "wrong item count"])
def test_a_scorer_refuses_a_damaged_model_dir_by_name(damage: str, tmp_path: Path) -> None:
    import json

    from recstream.bench.scorer import ml1m_shape_model
    from recstream.inference.model_dir import save_model_dir

    model = ml1m_shape_model(n_items=50)
    folder = tmp_path / "v1"
    save_model_dir(folder, model, [f"i{n}" for n in range(50)], {})
    if damage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:7])
        named = "model.safetensors: cannot be read"
    elif damage == "config not an object":
        (folder / "config.json").write_text("[]")
        named = "config.json: a JSON dict was expected"
    else:
        (folder / "item_ids.json").write_text(json.dumps(["a", "b", "c"]))
        named = "item_ids.json: 3 item ids for a model of 50 items"
    out = run("scorer", timeout=120, RECSTREAM_MODEL_DIR=str(folder),
              RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert out.returncode == 2, out.stderr
    assert "scorer: RECSTREAM_MODEL_DIR: cannot serve the model in" in out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("process", ["worker", "trainer"])
def test_a_state_folder_in_use_is_refused_at_once(process: str, tmp_path: Path) -> None:
    """A second worker on one state folder retried "DB for partition 0 is locked"
    every second and ignored SIGTERM; a second trainer died of a RocksDB traceback."""
    from recstream.schemas.state_lock import lock_state_dir

    state = tmp_path / "state"
    folder = state / "trainer" if process == "trainer" else state
    held = lock_state_dir(folder, process)  # what the first process holds
    try:
        out = run(process, timeout=60, RECSTREAM_STATE_DIR=str(state),
                  RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                  RECSTREAM_MODEL_REGISTRY=str(tmp_path / "models"))
    finally:
        held.close()
    assert out.returncode == 2, out.stderr
    assert f"{folder} is in use by another {process} (pid " in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("args", [["--rate", "0"], ["--items", "3"], ["--data", "/nonexistent"],
                                  ["--port", "70000"]])
def test_bad_demo_and_broker_flags_are_usage_errors(args: list[str]) -> None:
    command = "broker" if args[0] == "--port" else "demo"
    out = run(command, *args, timeout=60)
    assert out.returncode == 2 and "Invalid value" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_train_refuses_an_existing_out_before_training(tmp_path: Path) -> None:
    """It used to train first and refuse to write afterwards: a wasted run."""
    (tmp_path / "v1").mkdir()
    # No data at --data: a check made after loading it would fail on that instead.
    out = run("train", "--data", str(tmp_path / "no-data-here"), "--out", str(tmp_path / "v1"),
              timeout=60)
    assert out.returncode == 2 and "exists; choose a new version directory" in out.stderr


@pytest.mark.parametrize("flag, value, named", [("--lr", "-1", "lr (--lr) must be > 0"),
                                                ("--device", "tpu", "device (--device)"),
                                                ("--batch-size", "0", "batch_size (--batch-size)")])
def test_a_bad_training_flag_is_named_before_the_data_is_read(
        flag: str, value: str, named: str, tmp_path: Path) -> None:
    out = run("train", "--data", str(tmp_path / "no-data-here"), "--out", str(tmp_path / "v1"),
              flag, value, timeout=60)
    assert out.returncode == 2 and f"train: invalid training setting: {named}" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("args", [
    ["stream", "--users", "0"],  # silently replaced by the default before
    ["stream", "--data", "/nonexistent"],
    ["hotswap", "--backend", "bogus"],  # waited on a scorer that had exited, then a traceback
    ["hotswap", "--seq-len", "0"],
    ["drift", "--chunks", "0"],  # ZeroDivisionError
    ["faults", "--users", "0"],
])
def test_bad_benchmark_flags_are_usage_errors(args: list[str]) -> None:
    out = run("bench", *args, timeout=120)
    assert out.returncode == 2 and "Invalid value" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("process", ["worker", "trainer"])
def test_a_state_folder_that_is_a_file_is_named(process: str, tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")  # was a FileExistsError traceback
    out = run(process, timeout=60, RECSTREAM_STATE_DIR=str(tmp_path / "state"),
              RECSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
              RECSTREAM_MODEL_REGISTRY=str(tmp_path / "models"))
    assert out.returncode == 2 and "state folder (RECSTREAM_STATE_DIR)" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
