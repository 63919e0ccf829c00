"""Read MovieLens in RecBole's atomic format (``*.inter``, ``*.item``) as replayable events.

Only what the demo needs: every rating becomes a ``rate`` event with the rating
as its value, in time order (stable sort: ties keep file order, as the
evaluation protocol in the shared data README does).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recstream.schemas.messages import MIN_TS_MS, Event, now_ms
from recstream.synthetic import CatalogItem


class DataFormatError(ValueError):
    pass


@dataclass(frozen=True)
class MovieLensData:
    events: list[Event]
    items: dict[str, CatalogItem]


def load(directory: Path, shift_to_now: bool = True, limit: int | None = None) -> MovieLensData:
    """Events of the one ``*.inter`` file in ``directory``, titles from its ``*.item`` file.

    ``shift_to_now`` moves every time stamp by one offset so that the last event
    happens now and all gaps are kept; otherwise the original times are used.
    ``limit`` keeps only the first events in time order.
    """
    inter = _one(directory, "inter")
    rows = list(_rows(inter, required=("user_id", "item_id", "timestamp")))
    rows.sort(key=lambda r: int(float(r["timestamp"])))
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataFormatError(f"{inter} has no interactions")
    last_s = int(float(rows[-1]["timestamp"]))
    offset_ms = now_ms() - last_s * 1000 if shift_to_now else 0
    events = []
    for n, row in enumerate(rows):
        ts = int(float(row["timestamp"])) * 1000 + offset_ms
        if ts < MIN_TS_MS:
            raise DataFormatError(f"{inter}: time stamp {row['timestamp']} is before 1990")
        rating = row.get("rating")
        events.append(
            Event(
                event_id=f"ml-{n:07d}",
                user_id=row["user_id"],
                item_id=row["item_id"],
                event_type="rate",
                ts=ts,
                value=float(rating) if rating else None,
            )
        )
    return MovieLensData(events=events, items=_items(directory))


def _items(directory: Path) -> dict[str, CatalogItem]:
    found = sorted(directory.glob("*.item"))
    if not found:
        return {}  # titles are a nicety; the ids still replay
    items = {}
    for row in _rows(found[0], required=("item_id",)):
        title = row.get("movie_title") or row.get("title") or row["item_id"]
        year = row.get("release_year")
        genres = row.get("class") or row.get("genre") or row.get("categories") or ""
        items[row["item_id"]] = CatalogItem(
            item_id=row["item_id"],
            title=f"{title} ({year})" if year else title,
            category=genres,
        )
    return items


def _one(directory: Path, suffix: str) -> Path:
    if not directory.is_dir():
        raise DataFormatError(f"{directory} is not a directory")
    found = sorted(directory.glob(f"*.{suffix}"))
    if len(found) != 1:
        raise DataFormatError(f"expected one *.{suffix} file in {directory}, found {len(found)}")
    return found[0]


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Rows keyed by the column name without its RecBole type (``user_id:token`` -> ``user_id``)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path} is empty")
        names = [h.split(":", 1)[0].strip() for h in header]
        missing = [r for r in required if r not in names]
        if missing:
            raise DataFormatError(f"{path}: header {header} lacks {missing}")
        for values in reader:
            if values:
                yield dict(zip(names, values, strict=False))
