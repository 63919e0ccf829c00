"""Metrics on hand-computed cases, and tie-breaking that never favours the target."""

from __future__ import annotations

import math

import pytest
import torch
from recstream.trainer.data import Interaction, Interactions
from recstream.trainer.evaluate import evaluate, popularity_score_fn, random_score_fn
from recstream.trainer.metrics import metrics_from_ranks, rank_targets
from recstream.trainer.split import leave_one_out


def test_metrics_from_hand_computed_ranks() -> None:
    m = metrics_from_ranks([0, 4, 12])
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 5) / 3)
    assert m["hr@20"] == pytest.approx(1.0)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(14)) / 3)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 5 + 1 / 13) / 3)


def test_rank_counts_higher_allowed_items_only() -> None:
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 9.0, 1.0]])
    exclude = torch.tensor([[True, False, False, True, True, False]])
    gen = torch.Generator().manual_seed(0)
    # Target 3 (score 3.0) is excluded-marked but never removed; items 1, 2 beat it,
    # item 4 (9.0) is excluded, so rank 2.
    assert rank_targets(scores, torch.tensor([3]), exclude, gen).tolist() == [2]
    assert rank_targets(scores, torch.tensor([1]), exclude, gen).tolist() == [0]


def test_all_equal_scores_do_not_rank_the_target_first() -> None:
    n_users, n_items = 4000, 101
    scores = torch.zeros(n_users, n_items)
    exclude = torch.zeros(n_users, n_items, dtype=torch.bool)
    targets = torch.randint(0, n_items, (n_users,), generator=torch.Generator().manual_seed(1))
    ranks = rank_targets(scores, targets, exclude, torch.Generator().manual_seed(0))
    assert ranks.min() >= 0 and ranks.max() <= n_items - 1
    # Uniform over 0..100: mean 50, HR@10 about 10/101, never systematically first.
    assert ranks.float().mean().item() == pytest.approx(50, abs=2.5)
    assert (ranks < 10).float().mean().item() == pytest.approx(10 / 101, abs=0.02)
    again = rank_targets(scores, targets, exclude, torch.Generator().manual_seed(0))
    assert torch.equal(ranks, again)  # fixed seed, same tie-breaks


def test_nan_scores_rank_last() -> None:
    scores = torch.tensor([[0.0, float("nan"), 1.0, 2.0]])
    exclude = torch.tensor([[True, False, False, False]])
    ranks = rank_targets(scores, torch.tensor([1]), exclude, torch.Generator().manual_seed(0))
    assert ranks.tolist() == [2]


def _toy_split():
    rows = []
    for u in range(300):
        for t in range(6):
            rows.append(Interaction(f"u{u}", f"i{(u * 7 + t * 3) % 50}", t, "view"))
    return leave_one_out(Interactions("toy", rows, has_time=True))


def test_evaluator_on_constant_scores_is_chance_level() -> None:
    split = _toy_split()
    # One batch, so the tie-break draws are one torch.rand(300) from the seed.
    m = evaluate(random_score_fn(split), split, "test", seed=0, batch_size=300)
    assert m["users"] == 300 and m["seed"] == 0
    # 50 items, 5 distinct history items excluded (targets never): each target ties
    # with exactly 44 others, so its rank is floor(u * 45), never floor(u * 50).
    u = torch.rand(300, generator=torch.Generator().manual_seed(0))
    expected = metrics_from_ranks(torch.floor(u * 45).long())
    assert {k: m[k] for k in expected} == pytest.approx(expected, rel=1e-12, abs=0)
    assert expected != metrics_from_ranks(torch.floor(u * 50).long())


def test_evaluator_excludes_the_history_but_never_the_target() -> None:
    # u: 12 history items, then valid v1, then test t. w: test target "a" repeats
    # its first event, and "h1" (u's item, not in w's history) beats it.
    rows = [("u", f"h{k}") for k in range(1, 13)] + [("u", "v1"), ("u", "t")]
    rows += [("w", "a"), ("w", "b"), ("w", "c"), ("w", "a")]
    data = Interactions("toy", [Interaction(u, i, ts, "view") for ts, (u, i) in enumerate(rows)],
                        has_time=True)
    split = leave_one_out(data)
    index = {raw: k + 1 for k, raw in enumerate(split.item_ids)}
    # Distinct scores (no tie-break draws): the user's history on top, then "h1",
    # then the target, then every other item.
    def score(cases):  # type: ignore[no-untyped-def]
        out = -torch.arange(split.n_items + 1, dtype=torch.float32).repeat(len(cases), 1)
        for r, c in enumerate(cases):
            out[r, index["h1"]] = 60.0
            out[r, c.target] = 50.0
            for k, item in enumerate(c.items):
                if item != c.target:
                    out[r, item] = 100.0 + k
        return out

    m = evaluate(score, split, "test", seed=0)
    # With the history excluded: u ranks 0 (its 13 history items, h1 included, are
    # out), w ranks 1 (only h1 is above; "a" stays in though it is in w's history).
    # Without the exclusion u would rank 13 and w 3 (b, c and h1 above it).
    assert m["users"] == 2
    assert m["hr@10"] == 1.0 and m["hr@20"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2, rel=1e-12)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2) / 2, rel=1e-12)
    assert m == pytest.approx({**metrics_from_ranks([0, 1]), "users": 2, "seed": 0})


def test_evaluator_output_shape_is_checked() -> None:
    split = _toy_split()
    with pytest.raises(ValueError, match="expected"):
        evaluate(lambda cases: torch.zeros(len(cases), 3), split, "valid")
    assert evaluate(popularity_score_fn(split), split, "valid")["users"] == 300
