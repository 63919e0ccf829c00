"""The MovieLens atomic-file reader the demo's --data uses (tiny files, no ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.schemas import parse_event

from recstream.movielens import DataFormatError, load

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t4\t881250950\n"
    "2\t20\t3\t881250949\n"
    "1\t20\t5\t881250950\n"
    "2\t30\t1\t881251000\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "20\tGoldenEye\t1995\tAction Adventure Thriller\n"
)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "ml.inter").write_text(INTER)
    (tmp_path / "ml.item").write_text(ITEM)
    return tmp_path


def test_events_in_time_order_ties_keep_file_order(folder: Path) -> None:
    data = load(folder, shift_to_now=False)
    assert [(e.user_id, e.item_id) for e in data.events] == [
        ("2", "20"),
        ("1", "10"),
        ("1", "20"),
        ("2", "30"),
    ]
    first = data.events[0]
    assert first.ts == 881250949000 and first.event_type == "rate" and first.value == 3.0


def test_shift_to_now_keeps_gaps_and_passes_validation(folder: Path) -> None:
    data = load(folder)
    gaps = [b.ts - a.ts for a, b in zip(data.events, data.events[1:], strict=False)]
    assert gaps == [1000, 0, 50_000]
    for e in data.events:
        assert parse_event(e.model_dump_json(exclude_none=True).encode()) == e


def test_titles_and_limit(folder: Path) -> None:
    data = load(folder, limit=2)
    assert len(data.events) == 2
    assert data.items["10"].title == "Toy Story (1995)"
    assert data.items["20"].category == "Action Adventure Thriller"


def test_missing_columns_and_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="expected one"):
        load(tmp_path)
    (tmp_path / "x.inter").write_text("user_id:token\trating:float\n1\t3\n")
    with pytest.raises(DataFormatError, match="lacks"):
        load(tmp_path)
