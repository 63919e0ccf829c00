"""Serving interface over a version directory, and the item text embedder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.recommender import Recommender
from recstream.inference.sequence_recommender import load
from recstream.schemas.messages import ScoreRequest

T0 = 1_700_000_000_000


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(n_items=6, max_len=8, d_model=8, n_heads=2, text_dim=4))
    model.set_item_text(torch.randn(7, 4))
    save_model_dir(tmp_path / "v", model.eval(), [f"i{k}" for k in range(1, 7)], {})
    return tmp_path / "v"


def _req(items: list[str], exclude: list[str] | None = None) -> ScoreRequest:
    ts = [T0 + 1000 * k for k in range(len(items))]
    return ScoreRequest(user_id="u", items=items, ts=ts, event_types=["view"] * len(items),
                        exclude=exclude or [], trigger_event_id="t", trigger_ts=T0 + 10**6,
                        ingest_ms=T0 + 10**6)


def test_recommend_excludes_history_and_exclude_list(model_dir: Path) -> None:
    rec = load(model_dir)
    assert isinstance(rec, Recommender)
    out = rec.recommend([_req(["i1", "i2"], exclude=["i3"]), _req([]), _req(["nope", "i6"])], k=3)
    assert len(out) == 3 and all(len(r) == 3 for r in out)
    assert not {"i1", "i2", "i3"} & {r.item_id for r in out[0]}
    assert "i6" not in {r.item_id for r in out[2]}
    assert [r.score for r in out[0]] == sorted((r.score for r in out[0]), reverse=True)
    # Asking for more than is left returns what is left, never excluded items.
    (left,) = rec.recommend([_req(["i1", "i2", "i3", "i4"])], k=10)
    assert {r.item_id for r in left} == {"i5", "i6"}
    assert rec.recommend([], k=5) == []
    rec.observe([_req(["i1"])])  # a no-op
    assert rec.version.startswith("v-")


def test_unavailable_items_are_never_recommended_to_anyone(model_dir: Path) -> None:
    rec = load(model_dir)
    gone = frozenset({"i2", "i5", "not-in-this-version"})
    out = rec.recommend([_req(["i1"]), _req([]), _req(["i3"], exclude=["i4"])], k=6,
                        unavailable=gone)  # fmt: skip
    assert all(len(r) == 6 - len(gone & set(rec.item_ids)) - len(req) for r, req in
               zip(out, (["i1"], [], ["i3", "i4"]), strict=True))  # fmt: skip
    assert not gone & {r.item_id for row in out for r in row}
    # A changed set is used as given, not the indices worked out for the last one.
    (again,) = rec.recommend([_req([])], k=6, unavailable=frozenset({"i6"}))
    assert {r.item_id for r in again} == {"i1", "i2", "i3", "i4", "i5"}


def test_recommend_rejects_bad_input(model_dir: Path) -> None:
    rec = load(model_dir)
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend([_req(["i1"])], k=0)
    with pytest.raises(ValueError, match="differ in length"):
        rec.recommend([ScoreRequest(user_id="u", items=["i1"], ts=[], event_types=["view"],
                                    trigger_event_id="t", trigger_ts=T0, ingest_ms=T0)], k=1)


def test_item_text_embeddings_are_normalised_and_cached(tmp_path: Path) -> None:
    from recstream.inference.item_text import TEXT_DIM, embed_texts, texts_key

    texts = ["Toy Story (1995). Genres: Animation", "Heat (1995). Genres: Action, Crime",
             "Toy Story 2 (1999). Genres: Animation"]
    emb = embed_texts(texts, cache_dir=tmp_path)
    assert emb.shape == (3, TEXT_DIM)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    # Related titles are closer than unrelated ones.
    assert emb[0] @ emb[2] > emb[0] @ emb[1]
    assert (tmp_path / f"{texts_key(texts)}.safetensors").is_file()
    assert torch.equal(embed_texts(texts, cache_dir=tmp_path), emb)
    assert texts_key(texts) != texts_key(texts[::-1])
