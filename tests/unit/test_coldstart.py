"""The cold-start bench on tiny generated data (no ../shared, no language model)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from recstream.bench.coldstart import (
    ColdStartOptions,
    choose_cold_items,
    cold_model_factory,
    make_cold_split,
    run_coldstart_on,
)
from recstream.bench.quality import BenchError
from recstream.inference.model import ModelConfig
from recstream.trainer.data import Interaction, Interactions
from recstream.trainer.split import Split, leave_one_out
from recstream.trainer.train import training_rows

N_ITEMS = 40


def tiny_data(n_users: int = 120, seed: int = 0) -> Interactions:
    """Chains (item i then usually i + 1) with an item text per item."""
    rng = random.Random(seed)
    events = []
    for u in range(n_users):
        item, ts = rng.randrange(N_ITEMS), 1_000_000 + rng.randrange(10**6)
        for _ in range(rng.randint(8, 14)):
            events.append(Interaction(f"u{u}", f"i{item}", ts, "rate"))
            item = (item + 1) % N_ITEMS if rng.random() < 0.85 else rng.randrange(N_ITEMS)
            ts += rng.randrange(1_000, 100_000)
    return Interactions("tiny", events, True, {f"i{i}": f"item {i}" for i in range(N_ITEMS)})


def text_table(split: Split) -> torch.Tensor:
    """A stand-in for the MiniLM table: a smooth code of the item number."""
    table = torch.zeros(split.n_items + 1, 384)
    for idx, raw in enumerate(split.item_ids, start=1):
        k = int(raw[1:])
        table[idx, k] = 1.0
        table[idx, (k + 1) % N_ITEMS] = 0.5
    return table


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(tiny_data())


def test_cold_items_are_seeded_and_sized() -> None:
    a = choose_cold_items(1682, 0.1, seed=0)
    assert a == choose_cold_items(1682, 0.1, seed=0)
    assert a != choose_cold_items(1682, 0.1, seed=1)
    assert len(a) == 168 and min(a) >= 1 and max(a) <= 1682
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(BenchError):
            choose_cold_items(40, bad, seed=0)


def test_cold_items_never_in_training(split: Split) -> None:
    cs = make_cold_split(split, 0.2, seed=0)
    assert len(cs.cold) == 8 and cs.removed_train_events > 0
    cold = torch.tensor(sorted(cs.cold))
    # Training parts, training rows (inputs and targets) and counts: no cold item.
    for seq in cs.train.train_sequences():
        assert not set(seq.items) & cs.cold
    items, _, _, _, targets = training_rows(cs.train, max_len=16)
    assert not torch.isin(items, cold).any() and not torch.isin(targets, cold).any()
    counts = cs.train.train_item_counts()
    assert all(counts[i] == 0 for i in cs.cold)
    # Only the training parts changed: validation and test events are the original ones.
    for full, view in zip(split.users, cs.train.users, strict=True):
        assert view.items[-2:] == full.items[-2:]
        assert [i for i in full.items[:-2] if i not in cs.cold] == view.items[:-2]
    # Selection never uses a cold validation target; test cases come from the full split.
    valid = cs.train.cases("valid")
    assert valid and all(c.target not in cs.cold for c in valid)
    assert len(valid) + cs.excluded_valid_users == len(split.users)
    with pytest.raises(ValueError):
        cs.train.cases("test")
    cold_test = cs.cold_test_view().cases("test")
    assert cold_test and all(c.target in cs.cold for c in cold_test)
    assert cold_test == [c for c in split.cases("test") if c.target in cs.cold]


def test_cold_model_masks_ids_and_leaves_cold_out_of_the_loss(split: Split) -> None:
    cs = make_cold_split(split, 0.2, seed=0)
    factory = cold_model_factory(cs.cold)
    cold = sorted(cs.cold)
    text = factory(cs.train, ModelConfig(n_items=split.n_items, max_len=16, d_model=16),
                   text_table(split))
    assert (text.id_mask[cold] == 0).all()
    assert text.id_mask.sum() > 0
    ids = factory(cs.train, ModelConfig(n_items=split.n_items, max_len=16, d_model=16,
                                        use_text=False), None)
    rows = training_rows(cs.train, max_len=16)
    before = ids.item_id.weight[cold].detach().clone()
    ids.train()
    ids(*(t[:32] for t in rows)).backward()
    grad = ids.item_id.weight.grad
    assert grad[cold].abs().sum() == 0  # never a target, never a negative: untrained
    warm = [i for i in range(1, split.n_items + 1) if i not in cs.cold]
    assert grad[warm].abs().sum() > 0
    assert torch.equal(ids.item_id.weight[cold], before)


def test_bench_end_to_end(split: Split, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = tiny_data()
    out = tmp_path / "cold.json"
    opts = ColdStartOptions(dataset="tiny", data_root=tmp_path, json_out=out, fraction=0.2,
                            max_epochs=3, patience=2, progress=False,
                            model_overrides={"max_len": 16, "d_model": 16},
                            train_overrides={"batch_size": 32})
    result = run_coldstart_on(data, split, opts, text_table(split))
    assert json.loads(out.read_text()) == result
    assert result["complete"] and result["cold_items"] == 8
    assert [r["model"] for r in result["rows"]] == ["popularity", "ours", "ours+id-dropout", "id-only"]
    n_cold = len([c for c in split.cases("test") if c.target in set(
        split.item_ids.index(i) + 1 for i in result["cold_item_ids"])])
    for r in result["rows"]:
        assert r["cold_users"] == n_cold > 0
        assert r["all_users"] == len(split.users)
        for k in ("cold_hr@10", "cold_ndcg@10", "cold_hr@20", "all_hr@10", "all_ndcg@10"):
            assert 0.0 <= r[k] <= 1.0
    pop = result["rows"][0]
    assert pop["cold_hr@10"] == 0.0  # cold items have no training counts: ranked last
    assert result["text_over_id_cold_hr10"] is None or result["text_over_id_cold_hr10"] >= 0


def test_missing_data_root_is_a_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recstream.cli import app

    res = CliRunner().invoke(app, ["bench", "coldstart", "--dataset", "ml-100k",
                                   "--data-root", str(tmp_path), "--json",
                                   str(tmp_path / "x.json")])
    assert res.exit_code == 2
    assert "not found" in res.output
