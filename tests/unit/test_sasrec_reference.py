"""The same-run yardstick of ``bench scorer``: RecBole's SASRec at the benchmark's shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from recstream.bench.sasrec_reference import REFERENCE, left_aligned
from typer.testing import CliRunner

from recstream.cli import build_app

_TINY = ["bench", "scorer", "--batches", "2,64", "--lengths", "8,200", "--backends", "torch",
         "--budget", "0.01", "--threads", "1"]


def test_left_aligned_moves_each_rows_events_to_the_front_in_order():
    items = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 9], [0, 0, 0, 0, 0]])
    seqs, lengths = left_aligned(items)
    assert seqs.tolist() == [[5, 6, 7, 0, 0], [1, 2, 3, 4, 9], [0, 0, 0, 0, 0]]
    assert lengths.tolist() == [3, 5, 1]  # an empty row reads position 0 (padding)


def test_reference_rows_and_ratio_when_recbole_is_installed(tmp_path: Path):
    pytest.importorskip("recbole", reason="RecBole is a bench extra: `make bench-deps`")
    out = tmp_path / "scorer.json"
    result = CliRunner().invoke(build_app(), [*_TINY, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    ref = [r for r in report["rows"] if r["backend"] == REFERENCE]
    assert {(r["batch"], r["seq_len"]) for r in ref} == {(2, 8), (64, 8), (2, 200), (64, 200)}
    assert all(r["users_per_s"] > 0 for r in ref)
    head = next(r for r in ref if (r["batch"], r["seq_len"]) == (64, 200))
    best = report["best_cpu_users_per_s_b64_l200"]
    assert report["reference_users_per_s_b64_l200"] == round(head["users_per_s"], 1)
    assert report["best_cpu_over_reference_b64_l200"] == pytest.approx(
        best / head["users_per_s"], abs=0.01)
    cfg = report["machine"]["reference_config"]
    # RecBole's own defaults, with only the shape set to the benchmark model's.
    assert (cfg["hidden_size"], cfg["n_layers"], cfg["n_heads"], cfg["n_items"]) == (64, 2, 2, 3416)
    assert cfg["MAX_ITEM_LIST_LENGTH"] == 200 and cfg["inner_size"] == 256
    assert isinstance(cfg["layer_norm_eps"], float)


def test_without_recbole_the_reference_is_skipped_with_the_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "recbole", None)  # import recbole -> ImportError
    out = tmp_path / "scorer.json"
    result = CliRunner().invoke(build_app(), [*_TINY, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert all(r["backend"] != REFERENCE for r in report["rows"])
    assert "make bench-deps" in report["skipped"][f"ml1m-shape/{REFERENCE}"]
    assert "best_cpu_over_reference_b64_l200" not in report
    assert f"skipped ml1m-shape/{REFERENCE}" in result.output


def test_no_reference_option_leaves_it_out(tmp_path: Path):
    out = tmp_path / "scorer.json"
    result = CliRunner().invoke(build_app(), [*_TINY, "--no-reference", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert all(r["backend"] != REFERENCE for r in report["rows"])
    assert f"ml1m-shape/{REFERENCE}" not in report["skipped"]
