"""RecTools' SASRec and BERT4Rec as `bench quality` peers: trained on our split, ranked by
our evaluator. Needs the bench extra (`make bench-deps`); skips with that reason."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from recstream.trainer.data import load_interactions
from recstream.trainer.evaluate import evaluate, popularity_score_fn
from recstream.trainer.split import Split, leave_one_out

N_ITEMS = 30


def _pattern_split(tmp_path: Path, users: int = 300) -> Split:
    """Users walk the items in order (item i -> i + 1, 90% of steps): a sequence model
    learns it in a few epochs, popularity cannot."""
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, users + 1):
        item, ts = rng.randrange(N_ITEMS), 880_000_000
        for _ in range(rng.randint(6, 12)):
            lines.append(f"{u}\t{item + 1}\t5\t{ts}")
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else rng.randrange(N_ITEMS)
            ts += 60
    path = tmp_path / "pattern.inter"
    path.write_text("\n".join(lines) + "\n")
    return leave_one_out(load_interactions(path))


@pytest.mark.parametrize("peer", ["rectools-sasrec", "rectools-bert4rec"])
def test_a_rectools_peer_learns_the_pattern_and_is_ranked_by_our_evaluator(
        tmp_path: Path, peer: str) -> None:
    pytest.importorskip("rectools", reason="RecTools is a bench extra: `make bench-deps`")
    from recstream.bench.rectools_peers import run_peer

    split = _pattern_split(tmp_path)
    result = run_peer(peer, split, max_len=20, max_epochs=12, patience=12, progress=False)
    popularity = evaluate(popularity_score_fn(split), split, "test")
    # Mapped right, the pattern puts the peer far above popularity; a wrong id map
    # would leave it near the 10/30 of chance.
    assert result.test["hr@10"] > popularity["hr@10"] + 0.3, (result.test, popularity)
    assert result.test["users"] == len(split.users)
    assert result.epochs == 12 and not result.converged  # stopped by the epoch cap
    assert 1 <= result.best_epoch <= 12
    assert result.config["session_max_len"] == 20 and result.config["n_factors"] == 64


def test_a_large_catalogue_takes_the_libraries_sampled_losses() -> None:
    from recstream.bench.rectools_peers import SAMPLED_ABOVE_ITEMS, peer_config

    assert "loss" not in peer_config("rectools-sasrec", 1_682, 200)  # its default softmax
    big = SAMPLED_ABOVE_ITEMS + 1
    assert peer_config("rectools-sasrec", big, 50)["loss"] == "gBCE"
    assert peer_config("rectools-bert4rec", big, 50)["loss"] == "sampled_softmax"
    with pytest.raises(ValueError, match="unknown peer"):
        peer_config("rectools-gru4rec", 10, 50)
