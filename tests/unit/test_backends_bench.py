"""``recstream bench scorer`` is registered and writes the promised JSON (tiny run)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recstream.cli import build_app


def test_bench_scorer_cli_writes_rows_and_summary(tmp_path: Path):
    out = tmp_path / "scorer.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "scorer", "--json", str(out), "--batches", "2,64", "--lengths", "8,200",
        "--backends", "torch", "--budget", "0.01", "--threads", "1", "--no-reference",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["backend"] for r in rows} == {"torch-model", "torch"}
    assert {(r["batch"], r["seq_len"]) for r in rows} == {(2, 8), (64, 8), (2, 200), (64, 200)}
    for r in rows:
        assert set(r) >= {"backend", "batch", "seq_len", "users_per_s", "p50_ms", "p99_ms"}
        assert r["users_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
    assert report["best_cpu_backend_b64_l200"] == "torch"
    assert report["best_cpu_over_eager_b64_l200"] > 0
    assert report["best_cpu_users_per_s_b64_l200"] > 0
    assert "torch-model" in result.output  # the table is printed


@pytest.mark.parametrize("command", [("train",), ("bench", "scorer"), ("bench", "scorer-service")])
def test_age_bias_layers_options_default_to_the_model_default(command):
    # The CLI modules spell the default out (importing the model would load torch
    # for `recstream --help`); this keeps them equal to ModelConfig's.
    from recstream.bench.scorer_service import run_service_bench
    from recstream.inference.model import ModelConfig
    from typer.main import get_command

    cmd = get_command(build_app())
    for name in command:
        cmd = cmd.commands[name]
    (option,) = [p for p in cmd.params if p.name == "age_bias_layers"]
    assert option.default == ModelConfig.age_bias_layers
    default = inspect.signature(run_service_bench).parameters["age_bias_layers"].default
    assert default == ModelConfig.age_bias_layers


def test_bench_scorer_rejects_bad_options():
    result = CliRunner().invoke(build_app(), ["bench", "scorer", "--device", "tpu"])
    assert result.exit_code != 0


def test_bench_scorer_age_bias_layers_option_reaches_the_model(tmp_path: Path):
    out = tmp_path / "scorer.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "scorer", "--json", str(out), "--batches", "2", "--lengths", "8",
        "--backends", "torch", "--budget", "0.01", "--threads", "1", "--age-bias-layers", "last",
        "--no-reference",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["machine"]["config"]["age_bias_layers"] == "last"
    assert report["parity"]["ml1m-shape/torch"]["overlap"] == 1.0
    from recstream.bench.scorer import ml1m_shape_model

    assert ml1m_shape_model(0, "last").age_bias.weight.shape[1] == 2  # heads x one layer
    bad = CliRunner().invoke(build_app(), ["bench", "scorer", "--age-bias-layers", "first"])
    assert bad.exit_code != 0 and "all or last" in bad.output
