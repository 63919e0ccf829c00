"""The bench quality summary on hand-made rows: the ratio to the best peer counts
converged peers only (null with a reason when none converged), and our rows'
seeds give means and paired differences to ``ours``."""

from __future__ import annotations

import math
from typing import Any

import pytest
from recstream.bench.quality import (
    METRIC_KEYS,
    BenchError,
    QualityOptions,
    add_paired,
    paired_vs_ours,
    peer_ratio,
    seed_list,
    seed_row,
)


def _peer(name: str, ndcg: float, converged: bool, epochs: int = 5) -> dict[str, Any]:
    return {"model": f"recbole-{name}", "ndcg@10": ndcg, "converged": converged,
            "epochs": epochs}


def _seed(seed: int, ndcg: float, hr: float, **facts: Any) -> dict[str, Any]:
    metrics = dict.fromkeys(METRIC_KEYS, 0.5) | {"ndcg@10": ndcg, "hr@10": hr}
    return {"seed": seed, **metrics, "users": 7, "train_seconds": 2.0, "epochs": 3,
            "best_epoch": 2, "converged": True, "valid_ndcg10": 0.3} | facts


def test_unconverged_peers_are_not_counted() -> None:
    rows = [{"model": "popularity", "ndcg@10": 0.05, "converged": True},
            {"model": "ours", "ndcg@10": 0.3},
            _peer("sasrec", 0.2, True), _peer("bert4rec", 0.29, False),
            _peer("gru4rec", 0.1, True)]
    out = peer_ratio(rows)
    # bert4rec scores higher but stopped early: sasrec is the best converged peer.
    assert out["best_peer"] == "recbole-sasrec"
    assert out["ours_over_best_peer_ndcg10"] == pytest.approx(0.3 / 0.2, abs=1e-4)
    assert out["ours_over_best_peer_reason"] is None
    assert out["peers_not_converged"] == ["recbole-bert4rec"]


def test_no_converged_peer_gives_null_with_a_reason() -> None:
    rows = [{"model": "ours", "ndcg@10": 0.3}, _peer("sasrec", 0.05, False, epochs=2),
            _peer("gru4rec", 0.04, False, epochs=1)]
    out = peer_ratio(rows)
    assert out["ours_over_best_peer_ndcg10"] is None and out["best_peer"] is None
    assert out["ours_over_best_peer_reason"].startswith("no peer converged")
    assert "recbole-sasrec stopped after 2 epochs" in out["ours_over_best_peer_reason"]
    assert out["peers_not_converged"] == ["recbole-sasrec", "recbole-gru4rec"]


def test_no_peer_or_no_ours_gives_null_with_a_reason() -> None:
    assert peer_ratio([{"model": "ours", "ndcg@10": 0.3}])["ours_over_best_peer_reason"] == (
        "no peer row")
    out = peer_ratio([_peer("sasrec", 0.2, True)])
    assert out["ours_over_best_peer_ndcg10"] is None
    assert out["best_peer"] == "recbole-sasrec"
    assert out["ours_over_best_peer_reason"] == "no 'ours' row"


def test_seed_row_is_the_mean_of_its_seeds() -> None:
    row = seed_row("ours", [_seed(0, 0.2, 0.4), _seed(1, 0.3, 0.5, converged=False, epochs=9)],
                   loss="full")
    assert row["ndcg@10"] == pytest.approx(0.25) and row["hr@10"] == pytest.approx(0.45)
    assert row["seeds"] == [0, 1] and len(row["per_seed"]) == 2
    assert row["epochs"] == 9 and row["converged"] is False and row["loss"] == "full"


def test_paired_difference_to_ours_with_standard_error() -> None:
    ours = seed_row("ours", [_seed(0, 0.30, 0.50), _seed(1, 0.20, 0.40), _seed(2, 0.25, 0.45)])
    abl = seed_row("no-time", [_seed(0, 0.28, 0.50), _seed(1, 0.16, 0.38),
                               _seed(2, 0.25, 0.40)])
    diffs = [-0.02, -0.04, 0.0]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    paired = paired_vs_ours(abl, ours)
    assert paired["ndcg@10"] == {"mean": pytest.approx(mean, abs=1e-5),
                                 "se": pytest.approx(se, abs=1e-5), "n": 3}
    assert paired["hr@10"]["mean"] == pytest.approx((0 - 0.02 - 0.05) / 3, abs=1e-5)
    one = paired_vs_ours(seed_row("sasrec", [_seed(0, 0.1, 0.2)]), ours)
    assert one["ndcg@10"] == {"mean": pytest.approx(-0.2), "se": None, "n": 1}
    rows = [ours, abl]
    add_paired(rows)
    assert "paired_vs_ours" not in ours and rows[1]["paired_vs_ours"] == paired


def test_seed_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = QualityOptions(dataset="ml-100k", data_root=tmp_path, json_out=tmp_path / "q.json",
                          seed=5, seeds=3)
    assert seed_list(opts) == [5, 6, 7]
    opts.seeds = 0
    with pytest.raises(BenchError, match="--seeds"):
        seed_list(opts)
