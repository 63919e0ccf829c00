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


def _write_ml100k(root: Path, text: bool = True) -> None:
    folder = root / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, 121):
        item, ts = rng.randrange(N_ITEMS), 880_000_000 + rng.randrange(10**6)
        for _ in range(rng.randint(6, 12)):
            lines.append(f"{u}\t{item + 1}\t{rng.randint(1, 5)}\t{ts}")
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else rng.randrange(N_ITEMS)
            ts += rng.randrange(60, 86_400)
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    if not text:  # no .item file: no text encoder to load, a quicker run
        return
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
    # One seed by default: the row is its one seed's result.
    assert result["seeds"] == [0] and rows["ours"]["seeds"] == [0]
    assert rows["ours"]["per_seed"][0]["ndcg@10"] == rows["ours"]["ndcg@10"]
    assert rows["sasrec"]["paired_vs_ours"]["ndcg@10"]["n"] == 1


def _fake_peers(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """RecBole stand-ins: sasrec converged, bert4rec (higher) cut short, gru4rec converged."""
    import recstream.bench.recbole_peers as peers

    scores = {"sasrec": (0.2, True), "bert4rec": (0.6, False), "gru4rec": (0.1, True)}

    def run_peer(peer, split, max_len, **kwargs):  # type: ignore[no-untyped-def]
        ndcg, converged = scores[peer]
        metrics = {"hr@10": 2 * ndcg, "ndcg@10": ndcg, "mrr@10": ndcg, "hr@20": 2 * ndcg,
                   "ndcg@20": ndcg, "mrr@20": ndcg, "users": len(split.users)}
        return peers.PeerResult(metrics, metrics, 3, 2, 1.0, converged, {})

    monkeypatch.setattr(peers, "recbole_version", lambda: "0.0-fake")
    monkeypatch.setattr(peers, "run_peer", run_peer)


def _quality_with_fake_peers(tmp_path: Path, monkeypatch, *args: str):  # type: ignore[no-untyped-def]
    """``bench quality`` on a tiny ml-100k with fake RecBole peers: (CLI result, JSON)."""
    from recstream.cli import app

    _fake_peers(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _write_ml100k(tmp_path / "data", text=False)
    out = tmp_path / "q.json"
    res = CliRunner().invoke(app, [
        "bench", "quality", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"),
        "--max-epochs", "1", "--threads", "1", "--no-progress", "--json", str(out), *args,
    ])
    assert res.exit_code == 0, res.output
    return res, json.loads(out.read_text())["ml-100k"]


def test_ratio_counts_converged_peers_and_seeds_are_paired(tmp_path: Path,
                                                           monkeypatch) -> None:  # type: ignore[no-untyped-def]
    res, result = _quality_with_fake_peers(
        tmp_path, monkeypatch, "--peers", "sasrec,bert4rec,gru4rec", "--ours", "ours,sasrec",
        "--seeds", "2", "--seed", "3",
    )
    rows = {r["model"]: r for r in result["rows"]}
    # bert4rec scores highest but did not converge: the ratio is against sasrec.
    assert result["best_peer"] == "recbole-sasrec"
    assert result["peers_not_converged"] == ["recbole-bert4rec"]
    assert result["ours_over_best_peer_ndcg10"] == round(rows["ours"]["ndcg@10"] / 0.2, 4)
    assert result["ours_over_best_peer_reason"] is None
    assert "best converged peer: recbole-sasrec" in res.output
    # Each of our rows: one result per seed, the row their mean, ablations paired.
    assert result["seeds"] == [3, 4] and rows["recbole-sasrec"]["settings"]["seed"] == 3
    for name in ("ours", "sasrec"):
        assert [s["seed"] for s in rows[name]["per_seed"]] == [3, 4]
        mean = sum(s["ndcg@10"] for s in rows[name]["per_seed"]) / 2
        assert abs(rows[name]["ndcg@10"] - mean) < 1e-5
    paired = rows["sasrec"]["paired_vs_ours"]["ndcg@10"]
    diffs = [a["ndcg@10"] - b["ndcg@10"]
             for a, b in zip(rows["sasrec"]["per_seed"], rows["ours"]["per_seed"], strict=True)]
    assert paired["n"] == 2 and abs(paired["mean"] - sum(diffs) / 2) < 1e-5
    assert abs(paired["se"] - abs(diffs[0] - diffs[1]) / 2) < 1e-5
    assert "paired_vs_ours" not in rows["ours"]
    # Where the figures came from.
    assert result["command"].startswith("recstream") and result["argv"]
    assert "git_commit" in result and result["machine"]["cpus"] >= 1
    assert result["machine"]["cpu"] and "gpu" in result["machine"]
    assert result["versions"]["torch"] and result["versions"]["numpy"]
    assert "recbole" in result["versions"]


def test_no_converged_peer_gives_no_ratio(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    res, result = _quality_with_fake_peers(tmp_path, monkeypatch, "--peers", "bert4rec",
                                           "--ours", "ours")
    assert result["ours_over_best_peer_ndcg10"] is None and result["best_peer"] is None
    assert result["ours_over_best_peer_reason"].startswith("no peer converged")
    assert "no ours / best peer ratio: no peer converged" in res.output


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


def test_rectools_peers_are_rows_beside_recboles_and_count_in_the_ratio(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import recstream.bench.rectools_peers as rectools

    def run_peer(peer, split, max_len, **kwargs):  # type: ignore[no-untyped-def]
        assert peer == "rectools-sasrec" and max_len == 200
        metrics = {"hr@10": 0.8, "ndcg@10": 0.4, "mrr@10": 0.3, "hr@20": 0.9, "ndcg@20": 0.45,
                   "mrr@20": 0.31, "users": len(split.users)}
        return rectools.PeerResult(metrics, metrics, 5, 4, 1.0, True, {"n_factors": 64})

    monkeypatch.setattr(rectools, "rectools_version", lambda: "0.0-fake")
    monkeypatch.setattr(rectools, "run_peer", run_peer)
    res, result = _quality_with_fake_peers(tmp_path, monkeypatch, "--peers",
                                           "sasrec,rectools-sasrec", "--ours", "ours")
    rows = {r["model"]: r for r in result["rows"]}
    assert rows["rectools-sasrec"]["rectools"] == "0.0-fake"
    assert rows["rectools-sasrec"]["config"] == {"n_factors": 64}
    assert rows["recbole-sasrec"]["recbole"] == "0.0-fake"
    assert result["best_peer"] == "rectools-sasrec"  # the higher converged peer
    assert result["ours_over_best_peer_ndcg10"] == round(rows["ours"]["ndcg@10"] / 0.4, 4)
    # Cached under its own key: a second run reads it back.
    res, result = _quality_with_fake_peers(tmp_path, monkeypatch, "--peers",
                                           "rectools-sasrec", "--ours", "")
    assert [r["cached"] for r in result["rows"] if r["model"] == "rectools-sasrec"] == [True]


def test_an_unknown_peer_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    from recstream.cli import app

    _write_ml100k(tmp_path / "data", text=False)
    res = CliRunner().invoke(app, [
        "bench", "quality", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"),
        "--peers", "rectools-gru4rec", "--ours", "ours", "--json", str(tmp_path / "q.json"),
    ])
    assert res.exit_code == 2, res.output
    assert "unknown peer 'rectools-gru4rec'" in res.output and "rectools-sasrec" in res.output
    assert not (tmp_path / "q.json").exists()


def test_the_synthetic_dataset_is_the_demos_stream_hashed_and_new_item_cases_only(
        tmp_path: Path) -> None:
    from recstream.bench.synthetic_data import DEMO_EVENTS, demo_interactions

    from recstream.cli import app

    out = tmp_path / "q.json"
    res = CliRunner().invoke(app, ["bench", "quality", "--dataset", "synthetic", "--peers", "",
                                   "--ours", "", "--no-progress", "--json", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())["synthetic"]
    data, sha = demo_interactions()
    assert result["data"]["sha256"] == sha and result["data"]["events"] == DEMO_EVENTS
    assert result["data"]["has_time"] and result["data"]["has_text"]
    assert result["data"]["path"] is None and "new to the user" in result["data"]["cases"]
    # Fewer cases than users: repeats (a click after its view) are not ranked.
    popularity = result["rows"][0]
    assert popularity["model"] == "popularity"
    assert 0 < popularity["users"] < result["data"]["users"]
    assert demo_interactions(seed=8)[1] != sha
