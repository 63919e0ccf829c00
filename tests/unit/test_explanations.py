"""Explanations from attention: the rollout, the torch backend's optional output, and
the recommender's per-request lists (empty where the backend cannot say)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recstream.inference.backends.torch_backend import TorchBackend
from recstream.inference.features import build_batch
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.sequence_recommender import load
from recstream.inference.service import _explanations
from recstream.schemas.messages import Recommendation, ScoreRequest

T0 = 1_700_000_000_000


def _model(**cfg: object) -> SeqRecModel:
    torch.manual_seed(0)
    base = dict(n_items=9, max_len=8, d_model=8, n_heads=2, n_layers=2, text_dim=4)
    base.update(cfg)
    model = SeqRecModel(ModelConfig(**base))  # type: ignore[arg-type]
    model.set_item_text(torch.randn(10, 4))
    return model.eval()


def _batch(rows: list[list[int]], width: int = 6):
    ts = [[T0 + 1000 * k for k in range(len(r))] for r in rows]
    types = [[1] * len(r) for r in rows]
    return build_batch(rows, ts, types, width)


def test_rollout_is_a_distribution_over_real_events() -> None:
    model = _model()
    batch = _batch([[1, 2, 3], [4, 5, 6, 7, 8, 9], []])
    args = (batch.items, batch.event_types, batch.times, batch.query_times)
    before = model.score(*args)
    weights = model.attention_rollout(*args)
    assert weights.shape == (3, 6)
    assert torch.allclose(weights[:2].sum(dim=1), torch.ones(2), atol=1e-5)
    assert (weights[0, :3] == 0).all() and (weights[0, 3:] > 0).all()  # left padding
    assert (weights[2] == 0).all()  # nothing to explain
    # The capture leaves the model as it was: same scores, flags off.
    assert torch.equal(model.score(*args), before)
    assert not any(b.keep_attention or b.last_attention is not None for b in model.blocks)


def test_torch_backend_explains_in_batch_columns() -> None:
    model = _model()
    backend = TorchBackend(model, k=3)
    batch = _batch([[1, 2], [3, 4, 5]], width=6)  # 3 all-padding columns get trimmed
    weights, cols = backend.explain(batch, top=2)
    assert weights.shape == cols.shape == (2, 2)
    assert (cols[0] >= 4).all() and (cols[1] >= 3).all()  # real events only
    assert (weights[:, 0] >= weights[:, 1]).all()
    full = model.attention_rollout(batch.items, batch.event_types, batch.times, batch.query_times)
    assert torch.allclose(weights, torch.gather(full, 1, cols), atol=1e-5)


def _req(items: list[str]) -> ScoreRequest:
    ts = [T0 + 1000 * k for k in range(len(items))]
    return ScoreRequest(
        user_id="u",
        items=items,
        ts=ts,
        event_types=["view"] * len(items),
        trigger_event_id="t",
        trigger_ts=ts[-1] if ts else T0,
        ingest_ms=T0,
    )


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    save_model_dir(tmp_path / "v", _model(), [f"i{k}" for k in range(1, 10)], {})
    return tmp_path / "v"


def test_recommender_explanations_name_the_users_own_events(model_dir: Path) -> None:
    rec = load(model_dir, backend="torch", k=3)
    assert rec.can_explain
    reqs = [_req(["i1", "i2", "unknown", "i3"]), _req([]), _req(["i4", "i4", "i5"])]
    out = rec.explain(reqs, top=3)
    assert len(out) == 3 and out[1] == []
    assert {e.item_id for e in out[0]} <= {"i1", "i2", "i3"} and out[0]
    assert [e.weight for e in out[0]] == sorted((e.weight for e in out[0]), reverse=True)
    # A repeated item is one entry; weights are shares of the attention.
    assert (
        len({e.item_id for e in out[2]}) == len(out[2])
        and 0 < sum(e.weight for e in out[2]) <= 1.0001
    )
    # What the scorer puts in the message, and leaves out when not asked.
    why = _explanations(rec, reqs, 2)
    assert all(len(w) <= 2 for w in why)
    assert _explanations(rec, reqs, 0) == [[], [], []]
    msg = Recommendation(
        user_id="u",
        items=[],
        model_version="v",
        trigger_event_id="t",
        trigger_ts=T0,
        ingest_ms=T0,
        emitted_ms=T0,
        explanation=why[0],
    )
    assert Recommendation.model_validate_json(msg.model_dump_json()).explanation == why[0]


def test_models_without_explanations_give_empty_lists() -> None:
    # The online co-occurrence model (and the ONNX Runtime / TensorRT backends)
    # cannot say: the message then carries no explanation.
    from recstream.inference.recommender import load_recommender

    model = load_recommender(None, backend="auto", k=3)
    assert not getattr(model, "can_explain", False)
    assert _explanations(model, [_req(["i1"])], 3) == [[]]
