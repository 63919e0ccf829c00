"""OffsetGaps: holes in a partition's offsets are noticed, re-read, and given up on."""

from __future__ import annotations

from stream.offset_gaps import NOTHING, Hole, OffsetGaps, Verdict

TP = ("events", 0)


def feed(gaps: OffsetGaps, offsets: list[int], now: float = 0.0, gen: int = 1) -> list[Verdict]:
    return [gaps.observe(TP, gen, o, now) for o in offsets]


def test_contiguous_offsets_and_redeliveries_need_nothing() -> None:
    gaps = OffsetGaps()
    assert set(feed(gaps, [10, 11, 12, 11, 12, 13])) == {NOTHING}


def test_a_hole_asks_for_a_seek_to_its_first_offset_and_reports_when_filled() -> None:
    gaps = OffsetGaps(retry_s=0.5)
    assert feed(gaps, [10, 11]) == [NOTHING, NOTHING]
    # 12..14 never arrive; 15 does (Faust dropped them after a rebalance).
    assert gaps.observe(TP, 1, 15, now=1.0) == Verdict(seek_to=12)
    # Records fetched before the seek keep coming; no second seek right away.
    assert gaps.observe(TP, 1, 16, now=1.1) == NOTHING
    # The re-read: 12, 13, 14 fill the hole; 15 and 16 come again (duplicates).
    assert feed(gaps, [12, 13], now=1.2) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 1, 14, now=1.2) == Verdict(filled=Hole(12, 14))
    assert feed(gaps, [15, 16, 17], now=1.3) == [NOTHING] * 3


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
    # The re-read starts at 3: nothing at 2. Seek once more.
    assert gaps.observe(TP, 1, 3, now=0.2) == Verdict(seek_to=2)
    assert gaps.observe(TP, 1, 4, now=0.3) == NOTHING
    assert gaps.observe(TP, 1, 5, now=0.3) == NOTHING
    # The second re-read passes it too: given up.
    assert gaps.observe(TP, 1, 3, now=0.4) == Verdict(abandoned=Hole(2, 2))
    # Carries on after what was seen beyond the hole, with no new hole.
    assert feed(gaps, [4, 5, 6, 7], now=0.5) == [NOTHING] * 4


def test_a_second_hole_is_followed_once_the_first_fills() -> None:
    gaps = OffsetGaps(retry_s=0.5)
    feed(gaps, [0])
    assert gaps.observe(TP, 1, 2, now=0.0) == Verdict(seek_to=1)
    assert gaps.observe(TP, 1, 5, now=0.1) == NOTHING  # 3..4 missing too
    assert gaps.observe(TP, 1, 1, now=0.2) == Verdict(filled=Hole(1, 1))
    # The re-read goes on: 2 again, then 3 and 4 fill the second hole.
    assert feed(gaps, [2, 3], now=0.3) == [NOTHING, NOTHING]
    assert gaps.observe(TP, 1, 4, now=0.3) == Verdict(filled=Hole(3, 4))
    assert feed(gaps, [5, 6], now=0.4) == [NOTHING, NOTHING]


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
