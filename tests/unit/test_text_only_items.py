"""Catalogue items a version has no row for, ranked by their text alone (pure parts:
no broker; the scorer's loop is covered by tests/integration/test_items_topic.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from recstream.inference.catalogue import Catalogue
from recstream.inference.catalogue_texts import CatalogueTexts, TextFollower
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.sequence_recommender import load
from recstream.schemas.messages import ItemUpdate, ScoreRequest

T0 = 1_700_000_000_000
TEXTS = torch.randn(7, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """Id rows zeroed: each item is its text projection, as a new item is."""
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(n_items=6, max_len=8, d_model=8, n_heads=2, text_dim=4))
    model.set_item_text(TEXTS)
    with torch.no_grad():
        model.item_id.weight.zero_()
    save_model_dir(tmp_path / "v", model.eval(), [f"i{k}" for k in range(1, 7)], {})
    return tmp_path / "v"


def _req(items: list[str], exclude: tuple[str, ...] = ()) -> ScoreRequest:
    ts = [T0 + 1000 * k for k in range(len(items))]
    return ScoreRequest(user_id="u", items=items, ts=ts, event_types=["view"] * len(items),
                        exclude=list(exclude), trigger_event_id="t", trigger_ts=T0 + 10**6,
                        ingest_ms=T0 + 10**6)  # fmt: skip


def test_a_new_item_with_a_known_items_text_scores_as_that_item(model_dir: Path) -> None:
    rec = load(model_dir, backend="torch")
    (before,) = rec.recommend([_req(["i1"])], k=5)
    best = before[0]
    twin = TEXTS[int(best.item_id[1:])]  # row 0 is padding: i<k> is row k
    # Known items in the mapping are left to the version's own rows.
    assert rec.set_item_texts({"new": twin, "i2": TEXTS[2]}) == 1
    (after,) = rec.recommend([_req(["i1"])], k=5)
    ids = [r.item_id for r in after]
    assert {"new", best.item_id} <= set(ids[:2]), ids
    new_score = next(r.score for r in after if r.item_id == "new")
    # The eager user state the new item is scored with is the graph's.
    assert new_score == pytest.approx(best.score, abs=1e-4)
    assert len(after) == 5 and [r.score for r in after] == sorted(
        (r.score for r in after), reverse=True)


def test_a_new_item_in_the_history_or_exclude_list_is_never_recommended(model_dir: Path) -> None:
    rec = load(model_dir, backend="torch")
    rec.set_item_texts({"new": TEXTS[1], "other": TEXTS[2]})
    seen, excluded, fine = rec.recommend(
        [_req(["i1", "new"]), _req(["i1"], exclude=("new",)), _req(["i1"])], k=8)
    assert "new" not in {r.item_id for r in seen} | {r.item_id for r in excluded}
    assert {"new", "other"} <= {r.item_id for r in fine}
    assert rec.set_item_texts({}) == 0  # replaced: none left
    (plain,) = rec.recommend([_req(["i1"])], k=8)
    assert not {"new", "other"} & {r.item_id for r in plain}


def test_an_unavailable_new_item_is_never_recommended(model_dir: Path) -> None:
    rec = load(model_dir, backend="torch")
    rec.set_item_texts({"new": TEXTS[1], "other": TEXTS[2]})
    rows = rec.recommend([_req(["i1"]), _req([])], k=8, unavailable=frozenset({"new", "i3"}))
    for row in rows:
        ids = {r.item_id for r in row}
        assert "other" in ids and not {"new", "i3"} & ids


def _update(item: str, text: str | None) -> ItemUpdate:
    return ItemUpdate(item_id=item, text=text, updated_ms=T0)


def test_only_unknown_items_with_a_new_text_are_embedded() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> list[torch.Tensor]:
        calls.append(list(texts))
        return [torch.full((4,), float(len(t))) for t in texts]

    cat, texts = Catalogue(), CatalogueTexts(embed)
    for u in (_update("known", "a"), _update("new", "bb"), _update("bare", None)):
        cat.apply(u)
    todo = texts.pending(cat, {"known"})
    assert todo == {"new": "bb"}
    assert texts.embed(todo) == 1 and texts.generation == 1
    assert texts.pending(cat, {"known"}) == {}
    cat.apply(_update("new", "ccc"))  # a changed text is embedded again
    assert texts.pending(cat, {"known"}) == {"new": "ccc"}
    assert calls == [["bb"]] and float(texts.vectors["new"][0]) == 2.0


def test_the_follower_embeds_off_the_loop_then_hands_the_vectors_over(model_dir: Path) -> None:
    rec = load(model_dir, backend="torch")
    cat = Catalogue()
    cat.apply(_update("new", "a new item"))
    follower = TextFollower(CatalogueTexts(lambda ts: [TEXTS[1] for _ in ts]))

    async def run() -> list[int | None]:
        steps = [follower.step(rec, cat)]  # starts the embedding
        for _ in range(100):
            await asyncio.sleep(0.01)
            steps.append(follower.step(rec, cat))
            if steps[-1] is not None:
                break
        steps.append(follower.step(rec, cat))  # nothing new: nothing handed over
        return steps

    steps = asyncio.run(run())
    assert steps[0] is None and steps[-2] == 1 and steps[-1] is None
    assert "new" in {r.item_id for r in rec.recommend([_req(["i2"])], k=7)[0]}


def test_a_failed_embedding_ends_following_without_stopping_the_scorer(model_dir: Path) -> None:
    def broken(texts: list[str]) -> list[torch.Tensor]:
        raise RuntimeError("no MiniLM here")

    rec, cat = load(model_dir, backend="torch"), Catalogue()
    cat.apply(_update("new", "a new item"))
    follower = TextFollower(CatalogueTexts(broken))

    async def run() -> None:
        follower.step(rec, cat)
        for _ in range(100):
            await asyncio.sleep(0.01)
            assert follower.step(rec, cat) is None
            if follower.texts is None:
                return

    asyncio.run(run())
    assert follower.texts is None


def test_the_api_places_an_item_no_version_holds_by_its_text(tmp_path: Path) -> None:
    from recstream.inference.item_text import TEXT_DIM, embed_texts
    from recstream.inference.registry import Registry

    from recstream.api_similar import SimilarItems

    titles = ["Blue Note jazz saxophone record", "bebop jazz trumpet vinyl",
              "steel garden spade", "garden hoe and rake tool"]  # fmt: skip
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(n_items=4, max_len=4, d_model=64, n_heads=1, n_layers=1))
    model.set_item_text(torch.cat([torch.zeros(1, TEXT_DIM), embed_texts(titles)]))
    with torch.no_grad():
        model.item_id.weight.zero_()
    reg = Registry(tmp_path / "models")
    staged = reg.staging_dir()
    save_model_dir(staged, model.eval(), ["j1", "j2", "g1", "g2"], {})
    info = reg.publish(staged)
    similar = SimilarItems(reg.root)
    assert similar.load(Path(info.path), info.sha256)
    found = similar.similar("new", 4, {"j2"}, text="cool jazz saxophone quartet record")
    assert found is not None and [i for i, _ in found][0] == "j1" and "j2" not in dict(found)
    assert similar.similar("new", 4, set()) is None  # no text: nothing to place it by
