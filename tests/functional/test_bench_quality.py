"""`recstream bench quality` end to end on a generated MovieLens-format folder
(no ../shared, no RecBole): every row of ours and the ablations is evaluated by
the one protocol, the JSON has the documented shape, and a sequential pattern
puts the sequence models far above popularity."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

N_ITEMS = 30


def _write_ml100k(root: Path) -> None:
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, 121):
        item, ts = rng.randrange(N_ITEMS), 880_000_000 + rng.randrange(10**6)
        for _ in range(rng.randint(6, 12)):
            lines.append(f"{u}\t{item + 1}\t{rng.randint(1, 5)}\t{ts}")
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else rng.randrange(N_ITEMS)
            ts += rng.randrange(60, 86_400)
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i + 1}\tFilm {i}\t1995\tDrama" for i in range(N_ITEMS)]
    (folder / "ml-100k.item").write_text("\n".join(items) + "\n")


def test_bench_quality_rows_and_json_shape(tmp_path: Path) -> None:
    from recstream.cli import app

    _write_ml100k(tmp_path / "data")
    out = tmp_path / "q.json"
    res = CliRunner().invoke(app, [
        "bench", "quality", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"),
        "--peers", "", "--ours", "ours,sasrec", "--max-epochs", "15", "--patience", "3",
        "--threads", "1", "--no-progress", "--json", str(out),
    ])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())["ml-100k"]
    rows = {r["model"]: r for r in result["rows"]}
    assert {"popularity", "ours", "sasrec"} <= rows.keys()
    for row in rows.values():
        assert {"hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "users"} <= row.keys()
        assert row["users"] == 120
    # No peers ran, so there is no ratio to report (never a made-up one).
    assert result["ours_over_best_peer_ndcg10"] is None
    assert rows["ours"]["hr@10"] > rows["popularity"]["hr@10"] + 0.2
    # 30 items: "auto" keeps the full softmax, and the row says so.
    assert rows["ours"]["loss"] == rows["sasrec"]["loss"] == "full"


def test_our_loss_is_sampled_only_for_large_catalogues(tmp_path: Path) -> None:
    import pytest
    from recstream.bench.quality import (
        SAMPLED_LOSS_ABOVE_ITEMS,
        BenchError,
        QualityOptions,
        our_loss,
    )

    opts = QualityOptions(dataset="beauty", data_root=tmp_path, json_out=tmp_path / "q.json")
    assert our_loss(opts, 1_682) == "full"
    assert our_loss(opts, SAMPLED_LOSS_ABOVE_ITEMS + 1) == "sampled"
    opts.loss = "full"
    assert our_loss(opts, 54_542) == "full"
    opts.loss = "bpr"
    with pytest.raises(BenchError, match="unknown loss"):
        our_loss(opts, 10)


def test_unavailable_peers_fail_before_any_row_trains(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import recstream.bench.recbole_peers as peers
    import recstream.trainer.pipeline as pipeline

    from recstream.cli import app

    def missing() -> str:
        raise peers.PeerUnavailable("RecBole 1.2.1 is installed but cannot load: no tensorboard")

    def must_not_train(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a row trained before the peers were checked")

    monkeypatch.setattr(peers, "recbole_version", missing)
    monkeypatch.setattr(pipeline, "fit", must_not_train)
    _write_ml100k(tmp_path / "data")
    res = CliRunner().invoke(app, [
        "bench", "quality", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"),
        "--peers", "sasrec", "--ours", "ours", "--no-progress", "--json", str(tmp_path / "q.json"),
    ])
    assert res.exit_code == 2, res.output
    assert "cannot load: no tensorboard" in res.output
    assert not (tmp_path / "q.json").exists()
