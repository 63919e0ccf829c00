"""One fine-tuning round end to end (no broker): window -> warm start with catalogue
growth -> gate -> a published, verifiable version and its model-updates message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from recstream.inference.model import ModelConfig
from recstream.inference.model_dir import load_model_dir
from recstream.inference.registry import Registry, verify_version_dir
from recstream.trainer.finetune import grow_model
from recstream.trainer.item_catalogue import load_item_texts, text_rows
from recstream.trainer.publish import model_update
from recstream.trainer.round import RoundOptions, run_round
from recstream.trainer.train import TrainConfig
from recstream.trainer.window import TrainingWindow, WindowBounds
from recstream.trainer.window_split import window_split

from recstream.synthetic import generate

pytestmark = pytest.mark.slow


def test_round_grows_the_catalogue_and_publishes(tmp_path: Path) -> None:
    data = generate(2400, n_users=60, n_items=60, seed=3)
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text("".join(json.dumps({"item_id": i, "text": f"{c.title}. {c.category}"}) + "\n"
                                 for i, c in data.items.items()))
    texts = load_item_texts(catalogue)
    second = data.events[1600:]
    late = set(sorted({e.item_id for e in second})[-8:])  # appear only in round 2
    first = [e for e in data.events[:1600] if e.item_id not in late]

    reg = Registry(tmp_path / "models")
    opts = RoundOptions(
        train=TrainConfig(max_epochs=2, time_budget_s=5, progress=False),
        scratch=ModelConfig(n_items=1, max_len=20, d_model=16, n_heads=1, n_layers=1,
                            use_text=True),
        tolerance=1.0, min_holdout=1, texts=texts, cache_dir=tmp_path / "cache",
    )
    with TrainingWindow(tmp_path / "window", WindowBounds(max_events=50)) as w:
        w.apply(first)
        r1 = run_round(w, reg, opts, w.seq, w.trained_seq)
        assert r1.decision.reason == "first_version" and r1.published is not None
        w.set_trained_seq(r1.upto_seq)
        v1 = load_model_dir(r1.published.path)
        assert not late & set(v1.item_ids)

        w.apply(second)
        # The warm start itself: every weight of v1 is carried over, new rows appended.
        split = window_split(w.snapshot(), v1.item_ids, w.trained_seq)
        new_ids = split.item_ids[len(v1.item_ids):]
        assert late <= set(new_ids)
        grown = grow_model(v1.model, split, opts.scratch, text_rows(new_ids, texts, opts.cache_dir))
        n1 = v1.model.cfg.n_items + 1
        assert grown.cfg.n_items == split.n_items
        for name, old in v1.model.state_dict().items():
            new = grown.state_dict()[name]
            assert torch.equal(new[:n1] if new.shape != old.shape else new, old), name
        assert grown.item_text[n1:].abs().sum(1).gt(0).all()  # new items have their text
        assert grown.id_mask[n1:].eq(1).all()  # and train their id embedding

        r2 = run_round(w, reg, opts, w.seq, w.trained_seq, round_no=2)
        w.set_trained_seq(r2.upto_seq)

        # A candidate the gate refuses leaves the registry as it was.
        w.apply(first[:40])  # redeliveries: nothing new to train on or hold out
        assert w.pending() == 0
        # New users (a repeat of an item its user had is no hold-out case).
        w.apply([e.model_copy(update={"event_id": f"late-{e.event_id}", "ts": e.ts + 60_000,
                                      "user_id": f"late-{e.user_id}"})
                 for e in second[-200:]])
        strict = dataclasses.replace(opts, tolerance=-1.0)  # demands a gain of a whole point
        r3 = run_round(w, reg, strict, w.seq, w.trained_seq, round_no=3)
        assert not r3.decision.publish and r3.decision.reason == "worse_than_current"
        assert r3.published is None and r3.current is not None and r3.advance

    assert r2.published is not None, r2.decision
    assert r2.decision.reason == "not_worse" and r2.parent == v1.version
    assert r2.candidate is not None and r2.current is not None
    assert r2.candidate["users"] == r2.current["users"] == r2.facts["holdout_users"] > 0
    v2 = load_model_dir(r2.published.path)
    assert v2.item_ids[: len(v1.item_ids)] == v1.item_ids and late <= set(v2.item_ids)
    assert reg.current() is not None and reg.current().version == v2.version
    assert [v.version for v in reg.versions()] == [v1.version, v2.version]
    assert not any((reg.root / ".staging").glob("*/*"))  # nothing left half-written
    verify_version_dir(r2.published.path, r2.published.sha256)
    assert {"model.onnx", "export.json", "manifest.json"} <= {
        p.name for p in r2.published.path.iterdir()}

    update = model_update(r2.published, "recstream")
    assert update.version == v2.version and update.sha256 == r2.published.sha256
    assert Path(update.uri).is_absolute() and Path(update.uri) == r2.published.path.resolve()
    assert update.metrics["ndcg@10"] == pytest.approx(r2.candidate["ndcg@10"])
    assert update.metrics["new_items"] == r2.facts["new_items"] >= len(late)
    assert update.config["n_items"] == v2.model.cfg.n_items
