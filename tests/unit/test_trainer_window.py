"""The trainer's training window: bounds, dedupe, deletion, restart persistence."""

from __future__ import annotations

from pathlib import Path

from recstream.schemas.messages import Event
from recstream.trainer.window import DAY_MS, TrainingWindow, WindowBounds, merge_user
from recstream.trainer.window_split import window_split

T0 = 1_763_856_000_000


def ev(eid: str, user: str, ts: int, item: str = "i1") -> Event:
    return Event(event_id=eid, user_id=user, item_id=item, event_type="click", ts=ts)


def ids(rows: list) -> list[str]:
    return [r[1] for r in rows]


def test_merge_orders_dedupes_and_truncates() -> None:
    bounds = WindowBounds(max_events=3, max_age_days=1)
    rows = [(1, "a", "i", T0, "view"), (2, "b", "i", T0 + 10, "view")]
    new = [(3, "b", "i", T0 + 10, "view"),  # redelivery
           (4, "c", "i", T0 + 5, "view"),  # out of order: goes between a and b
           (5, "d", "i", T0 + 20, "view")]
    res = merge_user(rows, new, bounds, newest_ts=T0 + 20)
    assert ids(res.rows) == ["c", "b", "d"]  # a pushed out by the 3-event bound
    assert (res.added, res.duplicates, res.stale) == (2, 1, 0)


def test_merge_drops_events_older_than_the_age_bound() -> None:
    bounds = WindowBounds(max_events=10, max_age_days=1)
    res = merge_user([], [(1, "old", "i", T0, "view"), (2, "new", "i", T0 + DAY_MS + 5, "view")],
                     bounds, newest_ts=T0 + DAY_MS + 5)
    assert ids(res.rows) == ["new"]
    assert (res.added, res.stale) == (1, 1)


def test_merge_counts_a_new_event_pushed_out_at_once_as_stale() -> None:
    bounds = WindowBounds(max_events=2, max_age_days=30)
    rows = [(1, "a", "i", T0 + 5, "view"), (2, "b", "i", T0 + 6, "view")]
    res = merge_user(rows, [(3, "c", "i", T0 + 7, "view"), (4, "d", "i", T0 + 8, "view"),
                            (5, "e", "i", T0 + 1, "view")], bounds, newest_ts=T0 + 8)
    assert ids(res.rows) == ["c", "d"]
    assert (res.added, res.stale) == (2, 1)


def test_window_bounds_dedupe_counts(tmp_path: Path) -> None:
    with TrainingWindow(tmp_path / "w", WindowBounds(max_events=3, max_age_days=30)) as w:
        r = w.apply([ev(f"e{i}", "u1", T0 + i) for i in range(5)] + [ev("x", "u2", T0)])
        assert (r.added, r.stale) == (4, 2)  # u1's first two pushed out within the batch
        assert w.seq == 4  # only stored events are numbered
        r = w.apply([ev("e4", "u1", T0 + 4), ev("x", "u2", T0)])  # redelivered
        assert (r.added, r.duplicates) == (0, 2)
        assert w.seq == 4 and w.pending() == 4  # redeliveries never trigger a round
        assert ids(w.user("u1")) == ["e2", "e3", "e4"]
        assert (w.n_users, w.n_events) == (2, 4)


def test_window_deletes_users(tmp_path: Path) -> None:
    with TrainingWindow(tmp_path / "w", WindowBounds()) as w:
        w.apply([ev("a", "u1", T0), ev("b", "u1", T0 + 1), ev("c", "u2", T0)])
        assert w.delete_users(["u1", "nobody"]) == 1
        assert w.user("u1") == []
        assert (w.n_users, w.n_events) == (1, 1)
        assert [u.user for u in w.snapshot()] == ["u2"]
        w.apply([ev("d", "u1", T0 + 5)])  # a deleted user starts over
        assert ids(w.user("u1")) == ["d"]


def test_window_sweep_ages_out_old_events(tmp_path: Path) -> None:
    with TrainingWindow(tmp_path / "w", WindowBounds(max_age_days=1)) as w:
        w.apply([ev("a", "u1", T0), ev("b", "u2", T0 + 1), ev("b2", "u2", T0)])
        w.apply([ev("c", "u3", T0 + DAY_MS + 1)])  # moves the newest time stamp on
        assert w.sweep() == 2  # a and b2; b is exactly one day older than c
        assert (w.n_users, w.n_events) == (2, 2)
        assert ids(w.user("u2")) == ["b"]


def test_window_survives_a_restart(tmp_path: Path) -> None:
    bounds = WindowBounds(max_events=10)
    with TrainingWindow(tmp_path / "w", bounds) as w:
        w.apply([ev(f"e{i}", f"u{i % 3}", T0 + i) for i in range(9)])
        w.set_trained_seq(5)
        before = {u.user: u.rows for u in w.snapshot()}
    with TrainingWindow(tmp_path / "w", bounds) as w:
        assert {u.user: u.rows for u in w.snapshot()} == before
        assert (w.n_users, w.n_events, w.seq, w.trained_seq) == (3, 9, 9, 5)
        assert w.pending() == 4
        assert w.apply([ev("e0", "u0", T0)]).duplicates == 1  # dedupe across restarts
    with TrainingWindow(tmp_path / "w", bounds, read_only=True) as w:
        assert w.n_events == 9


def test_split_holds_out_each_users_newest_untrained_event(tmp_path: Path) -> None:
    with TrainingWindow(tmp_path / "w", WindowBounds()) as w:
        w.apply([ev("a1", "ua", T0, "x"), ev("a2", "ua", T0 + 1, "y"),
                 ev("b1", "ub", T0, "x")])
        trained = w.seq
        w.apply([ev("a3", "ua", T0 + 2, "z"), ev("c1", "uc", T0 + 3, "x")])
        split = window_split(w.snapshot(), base_items=["y", "old"], trained_seq=trained)
    # base order kept, new items appended in arrival order
    assert split.item_ids == ["y", "old", "x", "z"]
    assert split.new_items == 2
    # ua's newest (a3) arrived after the watermark; uc has no history; ub nothing new
    assert split.held_out == {"ua"}
    (case,) = split.cases("test")
    assert case.items == [3, 1] and case.target == 4
    train = {u.user: u.items for u in split.train_sequences()}
    assert train == {"ua": [3, 1], "ub": [3], "uc": [3]}
    assert split.train_item_counts() == [0, 1, 0, 3, 0]


def test_a_repeat_is_no_holdout_case_serving_could_never_show_it(tmp_path: Path) -> None:
    """The scorer excludes a user's history, so a newest event on an item the user
    already had (a click after its view) cannot be earned online: no gate case."""
    with TrainingWindow(tmp_path / "w", WindowBounds()) as w:
        w.apply([ev("a1", "ua", T0, "x"), ev("b1", "ub", T0, "x")])
        trained = w.seq
        w.apply([ev("a2", "ua", T0 + 1, "x"), ev("b2", "ub", T0 + 1, "y")])
        split = window_split(w.snapshot(), base_items=[], trained_seq=trained)
    assert split.held_out == {"ub"}
