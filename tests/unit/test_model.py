"""The model: causality, masking, cold items, config round trip, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from recstream.inference.features import build_batch, log_time_bucket
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import ModelDirError, load_model_dir, save_model_dir

N_ITEMS = 30
DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def _model(**kw: object) -> SeqRecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=N_ITEMS, max_len=12, d_model=16, n_heads=2, n_layers=2,
                      text_dim=8, **kw)  # type: ignore[arg-type]
    model = SeqRecModel(cfg)
    if cfg.use_text:
        model.set_item_text(torch.randn(N_ITEMS + 1, 8))
    return model.eval()


def _batch(items: list[list[int]], max_len: int = 12):
    ts = [[T0 + k * 3_600_000 * (k + 1) for k in range(len(s))] for s in items]
    types = [[1 + k % 5 for k in range(len(s))] for s in items]
    b = build_batch(items, ts, types, max_len)
    return b.items, b.event_types, b.times, b.query_times


@pytest.mark.parametrize("flags", [{}, {"age_bias_layers": "last"},
                                   {"use_time": False, "use_text": False,
                                    "use_event_type": False, "use_fusion": False}])
def test_future_events_do_not_change_earlier_positions(flags: dict[str, bool]) -> None:
    model = _model(**flags)
    items, types, times, query = _batch([[3, 5, 7, 9, 11, 13, 2, 4]])
    base = model.encode(items, types, times, query)
    # Change the newest event: its item, type and time.
    items2, types2, times2, query2 = items.clone(), types.clone(), times.clone(), query.clone()
    items2[0, -1], types2[0, -1] = 29, 4
    times2[0, -1] = query2[0, -1] = times[0, -1] + 12345.0
    changed = model.encode(items2, types2, times2, query2)
    assert torch.allclose(base[:, :-1], changed[:, :-1], atol=1e-6)
    assert not torch.allclose(base[:, -1], changed[:, -1])


def test_left_padding_does_not_change_the_score() -> None:
    model = _model()
    seq = [[3, 5, 7, 9]]
    wide = model.score(*_batch(seq, max_len=12))
    narrow = model.score(*_batch(seq, max_len=4))
    assert torch.allclose(wide, narrow, atol=1e-5)


def test_exclude_mask_and_padding_never_recommended() -> None:
    model = _model()
    inputs = _batch([[1, 2, 3], [4, 5]])
    exclude = torch.zeros(2, N_ITEMS + 1, dtype=torch.bool)
    exclude[0, 1:20] = True
    exclude[1, [4, 5, 6]] = True
    scores, idx = model.topk(*inputs, exclude, k=N_ITEMS)
    allowed = scores > -1e8
    assert set(idx[0][allowed[0]].tolist()) == set(range(20, N_ITEMS + 1))
    assert not set(idx[1][allowed[1]].tolist()) & {0, 4, 5, 6}
    assert allowed[1].sum() == N_ITEMS - 3


def test_text_only_cold_item_gets_a_finite_text_driven_score() -> None:
    model = _model()
    cold = 17
    with torch.no_grad():
        model.id_mask[cold] = 0.0
        model.item_id.weight[cold] = 1e6  # ignored for a cold item
    inputs = _batch([[1, 2, 3]])
    s = model.score(*inputs)[0, cold]
    assert torch.isfinite(s)
    with torch.no_grad():
        model.item_text[cold] = torch.randn(8)
    assert model.score(*inputs)[0, cold] != s  # the text, not the id, drives it


def test_sasrec_ablation_has_no_time_text_or_fusion_parameters() -> None:
    names = {n for n, _ in _model(use_time=False, use_text=False, use_event_type=False,
                                  use_fusion=False).named_parameters()}
    assert not [n for n in names if n.split(".")[0] in ("gap", "age_bias", "text_proj",
                                                         "gate", "event_type")]
    with pytest.raises(ValueError):
        _model(use_text=False).set_item_text(torch.zeros(N_ITEMS + 1, 8))


def test_losses_are_finite_and_backpropagate() -> None:
    for loss in ("full", "sampled"):
        model = _model(loss=loss, n_negatives=7).train()
        items, types, times, query = _batch([[1, 2, 3, 4], [5, 6]])
        targets = torch.roll(items, -1, dims=1) * (items != 0)
        targets[:, -1] = torch.tensor([5, 7])
        negatives = torch.randint(1, N_ITEMS + 1, (7,)) if loss == "sampled" else None
        out = model(items, types, times, query, targets, negatives=negatives)
        out.backward()
        assert torch.isfinite(out) and model.item_id.weight.grad is not None


def test_config_validation_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_items=5, d_model=10, n_heads=3).validate()
    with pytest.raises(ValueError, match="loss"):
        ModelConfig(n_items=5, loss="bpr").validate()
    with pytest.raises(ValueError, match="age_bias_layers"):
        ModelConfig(n_items=5, age_bias_layers="first").validate()
    cfg = ModelConfig(n_items=7, max_len=33, use_time=False, dropout=0.3)
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg
    # Unknown keys (metadata such as "version") are ignored.
    assert ModelConfig.from_dict({**dataclasses.asdict(cfg), "version": "x"}) == cfg


def test_model_dir_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.id_mask[3] = 0.0
    ids = [f"item{i}" for i in range(1, N_ITEMS + 1)]
    version = save_model_dir(tmp_path / "v1", model, ids, {"valid": {"ndcg@10": 0.1}})
    assert version.startswith("v1-")
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "config.json", "item_ids.json", "metrics.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = load_model_dir(tmp_path / "v1")
    assert loaded.item_ids == ids and loaded.version == version
    inputs = _batch([[1, 2, 3], [9]])
    assert torch.equal(model.score(*inputs), loaded.model.score(*inputs))
    with pytest.raises(FileExistsError):
        save_model_dir(tmp_path / "v1", model, ids, {})
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model_dir(tmp_path)


@pytest.mark.parametrize("file, text, named", [
    ("config.json", "{not json", "config.json: cannot be read as JSON"),
    ("config.json", "[]", "config.json: a JSON dict was expected"),
    ("item_ids.json", '["a"]', "item_ids.json: 1 item ids for a model of"),
    ("metrics.json", "[1]", "metrics.json: a JSON dict was expected"),
    ("model.safetensors", "garbage", "model.safetensors: cannot be read"),
])
def test_a_damaged_model_dir_names_the_file(tmp_path: Path, file: str, text: str,
                                            named: str) -> None:
    save_model_dir(tmp_path / "v", _model(), [f"i{i}" for i in range(N_ITEMS)], {})
    (tmp_path / "v" / file).write_text(text)
    with pytest.raises(ModelDirError, match=named):  # a ValueError: the CLIs report it
        load_model_dir(tmp_path / "v")


def test_weights_of_another_shape_are_named(tmp_path: Path) -> None:
    import json

    save_model_dir(tmp_path / "v", _model(), [f"i{i}" for i in range(N_ITEMS)], {})
    cfg = json.loads((tmp_path / "v" / "config.json").read_text())
    (tmp_path / "v" / "config.json").write_text(json.dumps({**cfg, "d_model": cfg["d_model"] * 2}))
    with pytest.raises(ModelDirError, match="model.safetensors does not fit config.json"):
        load_model_dir(tmp_path / "v")


def test_same_seed_same_weights() -> None:
    a, b = _model(), _model()
    for (n, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), n


def test_time_buckets_and_batch_layout() -> None:
    secs = torch.tensor([0.0, 1.0, 60.0, 3600.0, 86400.0, -5.0, 1e12])
    assert log_time_bucket(secs, 32).tolist() == [1, 2, 6, 12, 17, 1, 31]
    b = build_batch([[4, 5, 6]], [[T0, T0 + DAY_MS, T0 + 2 * DAY_MS]], [[1, 2, 3]], max_len=5,
                    trigger_ts_ms=[T0 + 3 * DAY_MS])
    assert b.items.tolist() == [[0, 0, 4, 5, 6]]
    assert b.times.tolist() == [[0.0, 0.0, -259200.0, -172800.0, -86400.0]]
    assert b.query_times[0, -1].item() == 0.0  # the trigger time is the reference
    trunc = build_batch([[1, 2, 3, 4]], [[1, 2, 3, 4]], [[1, 1, 1, 1]], max_len=2)
    assert trunc.items.tolist() == [[3, 4]]  # the most recent events are kept


class _TopK(torch.nn.Module):
    def __init__(self, model: SeqRecModel, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.topk(*inputs, k=self.k)


def test_topk_exports_to_onnx_and_matches_eager(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    wrapped = _TopK(_model(), k=5).eval()
    inputs = _batch([[1, 2, 3], [4, 5, 6, 7, 8]])
    exclude = torch.zeros(2, N_ITEMS + 1, dtype=torch.bool)
    exclude[0, [1, 2, 3]] = True
    args = (*inputs, exclude)
    names = ["items", "event_types", "times", "query_times", "exclude"]
    torch.onnx.export(wrapped, args, str(tmp_path / "m.onnx"), dynamo=False, input_names=names,
                      output_names=["scores", "indices"],
                      dynamic_axes={n: {0: "batch"} for n in names})
    wrapped.eval()  # export restores the wrapper's mode; keep eager in eval for the reference
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    scores, idx = sess.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    ref_scores, ref_idx = wrapped(*args)
    assert torch.allclose(torch.from_numpy(scores), ref_scores, atol=1e-5)
    assert torch.equal(torch.from_numpy(idx), ref_idx)


def test_id_dropout_drops_whole_id_rows_in_training_only() -> None:
    model = _model(id_dropout=0.5)
    with torch.no_grad():
        model.item_text.normal_()
        model.eval()
        served = model.item_table()
        assert torch.equal(served, model.item_table())  # no randomness at serving
        model.train()
        torch.manual_seed(0)
        trained = model.item_table()
    text_only = model.text_proj(model.item_text).detach()
    dropped = [i for i in range(1, model.cfg.n_items + 1)
               if torch.allclose(trained[i], text_only[i])]
    kept = [i for i in range(1, model.cfg.n_items + 1) if torch.allclose(trained[i], served[i])]
    # Every row is either exactly text-only (a cold item) or exactly as served.
    assert len(dropped) + len(kept) == model.cfg.n_items
    assert 0 < len(dropped) < model.cfg.n_items
    with pytest.raises(ValueError, match="id_dropout"):
        ModelConfig(n_items=5, id_dropout=1.0).validate()


def test_bidirectional_encoding_sees_later_events_and_hides_masked_items() -> None:
    model = _model(masked_pretraining=True)
    items, types, times, query = _batch([[3, 5, 7, 9, 11, 13]])
    later = items.clone()
    later[0, -1] = 29
    both_ways = model.encode(items, types, times, query, causal=False)
    # Without the causal mask a later event reaches the earlier positions.
    assert not torch.allclose(both_ways[:, 0], model.encode(later, types, times, query,
                                                            causal=False)[:, 0])
    hidden = torch.zeros_like(items, dtype=torch.bool)
    hidden[0, -3] = True
    swapped = items.clone()
    swapped[0, -3] = 21
    masked = model.encode(items, types, times, query, causal=False, hidden=hidden)
    # A hidden event's item is invisible everywhere; unhidden, the swap shows.
    assert torch.equal(masked, model.encode(swapped, types, times, query, causal=False,
                                            hidden=hidden))
    assert not torch.allclose(both_ways, model.encode(swapped, types, times, query,
                                                      causal=False))
    with pytest.raises(ValueError, match="masked_pretraining"):
        _model().encode(items, types, times, query, hidden=hidden)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_masked_item_loss_trains_the_mask_vector(loss: str) -> None:
    model = _model(masked_pretraining=True, loss=loss, n_negatives=7).train()
    items, types, times, query = _batch([[1, 2, 3, 4], [5, 6]])
    hidden = torch.zeros_like(items, dtype=torch.bool)
    hidden[0, -2] = hidden[1, -1] = True
    negatives = torch.randint(1, N_ITEMS + 1, (7,)) if loss == "sampled" else None
    out = model.masked_item_loss(items, types, times, query, hidden, negatives=negatives)
    out.backward()
    assert torch.isfinite(out) and model.mask_emb.grad is not None
    assert model.mask_emb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="padding"):
        model.masked_item_loss(items, types, times, query, items == 0, negatives=negatives)


def test_age_bias_in_the_last_layer_only() -> None:
    """``age_bias_layers="last"``: one layer's heads of age bias, and only the
    last block sees it (a bias on the first would change the first block's
    attention, which the hook below records)."""
    model = _model(age_bias_layers="last")
    assert model.age_bias.weight.shape == (model.cfg.n_time_buckets, model.cfg.n_heads)
    assert model.cfg.age_bias_layer_ids == (1,)
    assert _model(age_bias_layers="all").cfg.age_bias_layer_ids == (0, 1)
    assert _model().cfg.age_bias_layer_ids == (1,)  # the default
    assert _model(use_time=False).cfg.age_bias_layer_ids == ()
    items, types, times, query = _batch([[3, 5, 7, 9, 11, 13, 2, 4]])
    for block in model.blocks:
        block.keep_attention = True
    with torch.no_grad():
        model.encode(items, types, times, query)
        first, last = (b.last_attention.clone() for b in model.blocks)
        torch.nn.init.normal_(model.age_bias.weight, std=1.0)
        model.encode(items, types, times, query)
        first2, last2 = (b.last_attention for b in model.blocks)
    assert torch.equal(first, first2)
    assert not torch.allclose(last, last2)


def test_a_model_dir_saved_before_age_bias_layers_loads_as_all(tmp_path: Path) -> None:
    """Version folders written before the field existed have no ``age_bias_layers``
    key: they load as "all" (their age_bias holds every layer's heads) and score
    as they did, though today's default is "last"."""
    import json

    model = _model(age_bias_layers="all")
    with torch.no_grad():
        torch.nn.init.normal_(model.age_bias.weight, std=0.5)
    save_model_dir(tmp_path / "v", model, [f"i{n}" for n in range(N_ITEMS)], {})
    config = tmp_path / "v" / "config.json"
    raw = json.loads(config.read_text())
    del raw["age_bias_layers"]
    config.write_text(json.dumps(raw))
    loaded = load_model_dir(tmp_path / "v").model
    assert loaded.cfg.age_bias_layers == "all"
    items, types, times, query = _batch([[3, 5, 7, 9, 11, 13, 2, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded.encode(items, types, times, query),
                              model.encode(items, types, times, query))


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_gradients_repeat_exactly_on_two_threads(loss: str) -> None:
    """The same batch gives bit-identical gradients every time on a multi-threaded CPU
    (indexing the item table summed its rows' gradients in a varying order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = _model(loss=loss, n_negatives=20)  # eval: no dropout
        gen = torch.Generator().manual_seed(0)
        items = torch.randint(1, N_ITEMS + 1, (1024, 12), generator=gen)  # many repeats
        ts = [[T0 + k * 60_000 for k in range(12)]] * 1024
        b = build_batch(items.tolist(), ts, [[1] * 12] * 1024, 12)
        targets = torch.randint(1, N_ITEMS + 1, (1024, 12), generator=gen)
        negatives = torch.randint(1, N_ITEMS + 1, (20,), generator=gen)

        def grad() -> torch.Tensor:
            model.zero_grad()
            model(b.items, b.event_types, b.times, b.query_times, targets,
                  negatives=negatives if loss == "sampled" else None).backward()
            return model.item_id.weight.grad.clone()

        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(5))
    finally:
        torch.set_num_threads(threads)
