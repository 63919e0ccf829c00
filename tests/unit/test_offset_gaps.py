"""OffsetGaps: holes in a partition's offsets are noticed, re-read, and given up on;
offsets handled before in the generation are told apart (repeats)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st
from recstream.stream.offset_gaps import NOTHING, REPEAT, Hole, OffsetGaps, Runs, Verdict

TP = ("events", 0)


def feed(gaps: OffsetGaps, offsets: list[int], now: float = 0.0, gen: int = 1) -> list[Verdict]:
    return [gaps.observe(TP, gen, o, now) for o in offsets]


def test_contiguous_offsets_need_nothing_and_redeliveries_are_repeats() -> None:
    gaps = OffsetGaps()
    assert feed(gaps, [10, 11, 12, 11, 12, 13]) == [NOTHING] * 3 + [REPEAT] * 2 + [NOTHING]


def test_a_hole_asks_for_a_seek_to_its_first_offset_and_reports_when_filled() -> None:
    gaps = OffsetGaps(retry_s=0.5)
    assert feed(gaps, [10, 11]) == [NOTHING, NOTHING]
    # 12..14 never arrive; 15 does (Faust dropped them after a rebalance).
    assert gaps.observe(TP, 1, 15, now=1.0) == Verdict(seek_to=12)
    # Records fetched before the seek keep coming; no second seek right away.
    assert gaps.observe(TP, 1, 16, now=1.1) == NOTHING
    # The re-read: 12, 13, 14 fill the hole; 15 and 16 come again (repeats).
    assert feed(gaps, [12, 13], now=1.2) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 1, 14, now=1.2) == Verdict(filled=Hole(12, 14))
    assert feed(gaps, [15, 16, 17], now=1.3) == [REPEAT, REPEAT, NOTHING]


def test_a_seek_with_no_re_read_in_sight_is_repeated_without_counting() -> None:
    # A loaded worker: the stream's buffer, fetched before the seek, takes
    # longer than retry_s to drain. However long, the hole is never given up.
    gaps = OffsetGaps(max_attempts=2, retry_s=0.5)
    feed(gaps, [0])
    assert gaps.observe(TP, 1, 5, now=0.0) == Verdict(seek_to=1)
    assert gaps.observe(TP, 1, 6, now=0.4) == NOTHING
    # Each 0.6 s after the last seek: seek again, and again, never give up.
    seeks = [gaps.observe(TP, 1, o, now=0.6 * (o - 6)) for o in range(7, 30)]
    assert seeks == [Verdict(seek_to=1)] * len(seeks)
    # Then the re-read arrives and fills it.
    assert gaps.observe(TP, 1, 1, now=20.0) == NOTHING
    assert feed(gaps, [2, 3], now=20.0) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 1, 4, now=20.0) == Verdict(filled=Hole(1, 4))


def test_a_hole_that_re_reads_keep_passing_is_given_up() -> None:
    # Transaction markers take offsets that no consumer ever receives.
    gaps = OffsetGaps(max_attempts=2, retry_s=0.5)
    feed(gaps, [0, 1])
    assert gaps.observe(TP, 1, 3, now=0.0) == Verdict(seek_to=2)
    assert gaps.observe(TP, 1, 4, now=0.1) == NOTHING
    # The re-read starts at 3: nothing at 2. Seek once more (3 is a repeat).
    assert gaps.observe(TP, 1, 3, now=0.2) == Verdict(seek_to=2, repeat=True)
    assert gaps.observe(TP, 1, 4, now=0.3) == REPEAT
    assert gaps.observe(TP, 1, 5, now=0.3) == NOTHING
    # The second re-read passes it too: given up.
    assert gaps.observe(TP, 1, 3, now=0.4) == Verdict(abandoned=Hole(2, 2), repeat=True)
    # Carries on after what was seen beyond the hole, with no new hole.
    assert feed(gaps, [4, 5, 6, 7], now=0.5) == [REPEAT, REPEAT, NOTHING, NOTHING]
    # A record of the abandoned hole that turns up late was never handled.
    assert gaps.observe(TP, 1, 2, now=0.6) == NOTHING
    assert gaps.observe(TP, 1, 1, now=0.6) == REPEAT


def test_a_second_hole_is_followed_once_the_first_fills() -> None:
    gaps = OffsetGaps(retry_s=0.5)
    feed(gaps, [0])
    assert gaps.observe(TP, 1, 2, now=0.0) == Verdict(seek_to=1)
    assert gaps.observe(TP, 1, 5, now=0.1) == NOTHING  # 3..4 missing too
    assert gaps.observe(TP, 1, 1, now=0.2) == Verdict(filled=Hole(1, 1))
    # The re-read goes on: 2 again, then 3 and 4 fill the second hole.
    assert feed(gaps, [2, 3], now=0.3) == [REPEAT, NOTHING]
    assert gaps.observe(TP, 1, 4, now=0.3) == Verdict(filled=Hole(3, 4))
    assert feed(gaps, [5, 6], now=0.4) == [REPEAT, NOTHING]


def test_a_new_generation_starts_wherever_the_partition_resumes() -> None:
    gaps = OffsetGaps()
    feed(gaps, [0, 1, 2], gen=1)
    # After a rebalance Faust seeks to the committed offset: a jump is no hole.
    assert feed(gaps, [40, 41], gen=2) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 2, 43, now=5.0) == Verdict(seek_to=42)
    # An old generation's record after the new one began is no re-read of it.
    assert gaps.observe(TP, 1, 3, now=5.1) == NOTHING


def test_partitions_are_tracked_apart() -> None:
    gaps = OffsetGaps()
    assert gaps.observe(("events", 0), 1, 0, 0.0) == NOTHING
    assert gaps.observe(("events", 1), 1, 7, 0.0) == NOTHING
    assert gaps.observe(("events", 0), 1, 1, 0.0) == NOTHING
    assert gaps.observe(("events", 1), 1, 8, 0.0) == NOTHING


def test_a_generation_that_starts_past_the_committed_offset_has_a_hole() -> None:
    gaps = OffsetGaps()
    feed(gaps, [0, 1, 2], gen=1)
    # Committed 40, but the first record of the new generation is 43: 40..42 never came.
    assert gaps.observe(TP, 2, 43, now=5.0, committed=lambda tp: 40) == Verdict(seek_to=40)
    assert feed(gaps, [40, 41], now=5.1, gen=2) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 2, 42, now=5.1) == Verdict(filled=Hole(40, 42))
    # Resuming at (or before) the committed offset is normal.
    assert gaps.observe(TP, 3, 40, now=6.0, committed=lambda tp: 40) == NOTHING
    assert gaps.observe(TP, 4, 30, now=7.0, committed=lambda tp: 40) == NOTHING


def test_a_new_generation_forgets_what_was_handled() -> None:
    # A rebalance may have restored the tables: a redelivery is handled afresh.
    gaps = OffsetGaps()
    feed(gaps, [0, 1, 2], gen=1)
    assert feed(gaps, [1, 2, 3], gen=2) == [NOTHING] * 3


def test_a_hole_open_for_long_keeps_one_run_of_what_came_after_it() -> None:
    # Seeks that never take (retry_s long): the partition goes on past the hole.
    gaps = OffsetGaps(retry_s=1e9)
    feed(gaps, [0])
    assert gaps.observe(TP, 1, 2, now=0.0) == Verdict(seek_to=1)
    assert set(feed(gaps, list(range(3, 100_000)))) == {NOTHING}
    assert len(gaps._parts[TP].ahead) == 1  # one run, not 99,998 offsets
    assert gaps.observe(TP, 1, 1, now=1.0) == Verdict(filled=Hole(1, 1))
    assert gaps.observe(TP, 1, 99_999, now=1.0) == REPEAT
    assert gaps.observe(TP, 1, 100_000, now=1.0) == NOTHING


@given(st.lists(st.integers(0, 60), max_size=80))
def test_runs_hold_the_same_members_as_a_set(xs: list[int]) -> None:
    runs, model = Runs(), set()
    for x in xs:
        runs.add(x)
        model.add(x)
    assert [x for x in range(62) if x in runs] == sorted(model)
    assert bool(runs) == bool(model)
    if model:
        assert runs.first() == min(model)
        # Runs are maximal: their count is the number of breaks in the members.
        ordered = sorted(model)
        assert len(runs) == 1 + sum(b > a + 1 for a, b in pairwise(ordered))
        end = runs.take_run(runs.first())
        assert end == next(x for x in range(min(model), 62) if x not in model)
        assert all(x not in runs for x in range(min(model), end))
