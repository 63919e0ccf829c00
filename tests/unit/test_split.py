"""The evaluation split on hand-made sequences: stable time order, ties, drops."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.trainer.data import Interaction, Interactions, load_atomic, load_interactions
from recstream.trainer.split import leave_one_out


def _data(rows: list[tuple[str, str, int]]) -> Interactions:
    return Interactions("t", [Interaction(u, i, ts, "rate") for u, i, ts in rows], has_time=True)


def test_stable_sort_keeps_file_order_for_equal_time_stamps() -> None:
    # u1: b and c share ts=5 (file order b, c); a is earlier but later in the file.
    data = _data([("u1", "b", 5), ("u1", "c", 5), ("u1", "a", 1), ("u1", "d", 9)])
    split = leave_one_out(data)
    ids = split.item_ids
    (u,) = split.users
    assert [ids[i - 1] for i in u.items] == ["a", "b", "c", "d"]
    assert u.ts == [1, 5, 5, 9]
    valid, test = split.cases("valid")[0], split.cases("test")[0]
    assert ids[valid.target - 1] == "c" and [ids[i - 1] for i in valid.items] == ["a", "b"]
    assert ids[test.target - 1] == "d" and [ids[i - 1] for i in test.items] == ["a", "b", "c"]


def test_tie_between_valid_and_test_keeps_file_order() -> None:
    data = _data([("u", "x", 1), ("u", "late_in_file", 7), ("u", "first_in_file", 7)][::-1])
    split = leave_one_out(data)
    ids = split.item_ids
    # File order is first_in_file, late_in_file, x; x is earliest, the ts=7 pair keeps file order.
    assert ids[split.cases("valid")[0].target - 1] == "first_in_file"
    assert ids[split.cases("test")[0].target - 1] == "late_in_file"


def test_users_with_fewer_than_three_events_are_dropped() -> None:
    data = _data([("short", "a", 1), ("short", "b", 2),
                  ("ok", "a", 1), ("ok", "c", 2), ("ok", "d", 3)])
    split = leave_one_out(data)
    assert [u.user for u in split.users] == ["ok"]
    assert split.dropped_users == 1
    # Items of dropped users that no kept user touched are not in the catalogue.
    assert split.item_ids == ["a", "c", "d"]
    assert split.train_item_counts() == [0, 1, 0, 0]


def test_catalogue_indices_follow_first_appearance() -> None:
    data = _data([("u", "z", 3), ("u", "y", 2), ("u", "x", 1), ("v", "w", 1), ("v", "z", 2),
                  ("v", "q", 3)])
    split = leave_one_out(data)
    assert split.item_ids == ["z", "y", "x", "w", "q"]
    train = {s.user: s.items for s in split.train_sequences()}
    assert train == {"u": [3], "v": [4]}


def test_load_atomic_with_ties_and_item_text(tmp_path: Path) -> None:
    inter = tmp_path / "toy.inter"
    inter.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n1\t11\t3\t100\n1\t12\t5\t50\n2\t10\t1\t7\n"
    )
    (tmp_path / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t1995\tAction\n"
    )
    data = load_atomic(inter)
    assert data.has_time and [e.ts for e in data.events] == [100_000, 100_000, 50_000, 7_000]
    assert data.item_text["10"] == "Toy Story (1995). Genres: Animation, Comedy"
    split = leave_one_out(data)
    (u,) = split.users
    assert [split.item_ids[i - 1] for i in u.items] == ["12", "10", "11"]
    assert load_interactions(tmp_path).name == "toy"  # a directory with one .inter


def test_user_item_txt_uses_line_order(tmp_path: Path) -> None:
    p = tmp_path / "beauty.txt"
    p.write_text("1 5\n1 6\n1 7\n2 5\n")
    data = load_interactions(p)
    assert not data.has_time
    assert [(e.user, e.item) for e in data.events] == [("1", "5"), ("1", "6"), ("1", "7"), ("2", "5")]
    assert [e.ts for e in data.events] == sorted(e.ts for e in data.events)


def test_bad_inputs_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_interactions(tmp_path / "missing.inter")
    with pytest.raises(ValueError, match="no user has"):
        leave_one_out(_data([("u", "a", 1)]))
    with pytest.raises(ValueError, match="valid"):
        leave_one_out(_data([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])).cases("train")


def test_training_rows_drop_repeat_targets_unless_asked() -> None:
    """A repeat (the user had the item before) is no target by default: serving
    excludes the history, so it could never be recommended."""
    from recstream.trainer.train import training_rows

    # train part of u: a b a c (then valid d, test e)
    data = _data([("u", i, t) for t, i in enumerate("abacde")])
    split = leave_one_out(data)
    ids = split.item_ids
    *_, with_repeats = training_rows(split, max_len=8, repeat_targets=True)
    *_, new_only = training_rows(split, max_len=8)
    assert [ids[i - 1] for i in with_repeats[0].tolist() if i] == ["b", "a", "c"]
    assert [ids[i - 1] for i in new_only[0].tolist() if i] == ["b", "c"]
    # A user whose every target is a repeat gives no row at all.
    only_repeats = leave_one_out(_data([("r", i, t) for t, i in enumerate("aaaxy")]))
    with pytest.raises(ValueError, match="only repeats"):
        training_rows(only_repeats, max_len=8)
