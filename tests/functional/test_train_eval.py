"""End to end on tiny generated data: event log -> train -> version dir -> eval -> serve.

The data has a strong sequential pattern (item i is usually followed by i + 1)
that popularity cannot see, so a working model must beat it by a clear margin.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from recstream.inference.sequence_recommender import load
from recstream.schemas.messages import Event, ScoreRequest
from recstream.trainer.data import load_interactions, write_event_log
from recstream.trainer.evaluate import evaluate, popularity_score_fn
from recstream.trainer.split import leave_one_out
from typer.testing import CliRunner

T0 = 1_700_000_000_000
N_ITEMS = 40
TYPES = ("view", "click", "cart")


def chain_events(n_users: int = 160, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for u in range(n_users):
        item, ts = rng.randrange(N_ITEMS), T0 + rng.randrange(10**8)
        for k in range(rng.randint(8, 16)):
            events.append(Event(event_id=f"e{u}-{k}", user_id=f"u{u}", item_id=f"i{item}",
                                event_type=rng.choice(TYPES), ts=ts))
            item = (item + 1) % N_ITEMS if rng.random() < 0.85 else rng.randrange(N_ITEMS)
            ts += rng.randrange(1_000, 3_600_000)
    rng.shuffle(events)  # file order is not time order: the split must sort
    return events


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "events.jsonl"
    write_event_log(path, chain_events())
    return path


def test_train_eval_serve_beats_popularity(event_log: Path, tmp_path: Path) -> None:
    from recstream.cli import app

    out, report = tmp_path / "v1", tmp_path / "eval.json"
    runner = CliRunner()
    res = runner.invoke(app, [
        "train", "--data", str(event_log), "--out", str(out), "--max-len", "16",
        "--d-model", "32", "--max-epochs", "40", "--patience", "4", "--lr", "3e-3",
        "--batch-size", "32", "--dropout", "0.1", "--threads", "1", "--no-progress",
    ])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["valid"]["users"] == 160 and "test" in metrics

    res = runner.invoke(app, ["eval", "--model", str(out), "--data", str(event_log),
                              "--json", str(report)])
    assert res.exit_code == 0, res.output
    ours = json.loads(report.read_text())["metrics"]
    # The eval command re-splits the data and must reproduce training's test figures.
    assert ours["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)

    split = leave_one_out(load_interactions(event_log))
    pop = evaluate(popularity_score_fn(split), split, "test")
    print("ours", ours, "popularity", pop)
    assert ours["hr@10"] > pop["hr@10"] + 0.25, (ours, pop)
    assert ours["ndcg@10"] > 2 * pop["ndcg@10"], (ours, pop)

    # Serving: a chain ending in i5 (an unknown item after it), so i6 is the obvious
    # next one; history and `exclude` are never returned.
    rec = load(out)
    seq = ["i1", "i2", "i3", "i4", "i5", "unknown"]
    ts = [T0 + k * 600_000 for k in range(len(seq))]
    req = ScoreRequest(user_id="x", items=seq, ts=ts, event_types=["view"] * len(seq),
                       exclude=["i7"], trigger_event_id="e", trigger_ts=ts[-1],
                       ingest_ms=ts[-1] + 4)
    (ranked,) = rec.recommend([req], k=10)
    got = [r.item_id for r in ranked]
    assert len(got) == 10 and not {"i1", "i2", "i3", "i4", "i5", "i7"} & set(got)
    assert got[0] == "i6", got
    assert rec.version == json.loads((out / "config.json").read_text())["version"]


def test_train_refuses_to_overwrite_and_reports_bad_data(event_log: Path, tmp_path: Path) -> None:
    from recstream.cli import app

    (tmp_path / "v1").mkdir()
    res = CliRunner().invoke(app, ["train", "--data", str(event_log), "--out",
                                   str(tmp_path / "v1"), "--max-epochs", "1", "--no-progress"])
    assert res.exit_code == 2 and "exists" in res.output
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope.inter"), "--out",
                                   str(tmp_path / "v2"), "--no-progress"])
    assert res.exit_code == 2 and "no data" in res.output


def test_masked_item_pretraining_runs_before_training_and_serves(
        event_log: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from recstream.cli import app

    caplog.set_level(logging.INFO, logger="recstream.trainer.train")

    out = tmp_path / "v1"
    res = CliRunner().invoke(app, [
        "train", "--data", str(event_log), "--out", str(out), "--max-len", "16",
        "--d-model", "32", "--max-epochs", "2", "--pretrain-epochs", "3", "--lr", "3e-3",
        "--batch-size", "32", "--threads", "1", "--no-progress",
    ])
    assert res.exit_code == 0, res.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    pre = [h for h in history if "pretrain_epoch" in h]
    assert [h["pretrain_epoch"] for h in pre] == [1, 2, 3]
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2]
    assert history.index(pre[-1]) < len(pre)  # pre-training comes first
    # --no-progress: no bars, one log line per epoch instead.
    lines = [r.getMessage() for r in caplog.records if r.name == "recstream.trainer.train"]
    assert [m.split(":")[0] for m in lines] == [
        "pre-training epoch 1/3", "pre-training epoch 2/3", "pre-training epoch 3/3",
        "epoch 1/2", "epoch 2/2"]
    assert "valid NDCG@10" in lines[-1]
    # The chain is learnable from both sides: the masked loss falls.
    assert pre[-1]["masked_loss"] < pre[0]["masked_loss"]
    assert json.loads((out / "config.json").read_text())["masked_pretraining"] is True
    rec = load(out)  # the [mask] vector travels with the weights; serving ignores it
    req = ScoreRequest(user_id="x", items=["i1", "i2"], ts=[T0, T0 + 1000],
                       event_types=["view", "view"], exclude=[], trigger_event_id="e",
                       trigger_ts=T0 + 1000, ingest_ms=T0 + 1004)
    assert len(rec.recommend([req], k=5)[0]) == 5
