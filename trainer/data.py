"""Loaders for interaction logs, all returning one :class:`Interactions` value.

Supported inputs (chosen by :func:`load_interactions` from the path):

* RecBole atomic files: ``X.inter`` with a header like
  ``user_id:token	item_id:token	rating:float	timestamp:float`` and optionally
  ``X.item`` beside it (``item_id:token	movie_title:token_seq	release_year:token
  class:token_seq`` for MovieLens) whose text fields become item texts;
  a directory holding exactly one ``.inter`` file works too;
* SASRec/BERT4Rec ``user item`` files (``beauty.txt``): each user's lines in time
  order, no time stamps; the line number is used as the time stamp (ms) so that
  order is kept and ``has_time`` is False;
* recstream's own event log: JSON lines of :class:`schemas.messages.Event`.

Events are returned in file order; sorting and splitting live in
:mod:`trainer.split`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from recstream.schemas.messages import Event


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    ts: int  # milliseconds since the epoch (or order, when has_time is False)
    event_type: str


@dataclass
class Interactions:
    name: str
    events: list[Interaction]
    has_time: bool
    #: raw item id -> text (title, year, genres...), when the data has item text
    item_text: dict[str, str] = field(default_factory=dict)


def _atomic_columns(header: str) -> dict[str, int]:
    """Column index by bare field name (``user_id:token`` -> ``user_id``)."""
    return {c.split(":", 1)[0].strip(): i for i, c in enumerate(header.rstrip("\n").split("\t"))}


def _item_text_from_atomic(path: Path) -> dict[str, str]:
    """Item texts from a RecBole ``.item`` file.

    Title-like fields first, a year in parentheses, genre/category lists after
    "Genres:" so the sentence reads naturally for the language model.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        return {}
    cols = _atomic_columns(lines[0])
    id_col = cols.get("item_id")
    if id_col is None:
        raise ValueError(f"{path}: no item_id column in header {lines[0]!r}")
    title = next((c for c in ("movie_title", "title", "name") if c in cols), None)
    year = next((c for c in ("release_year", "year") if c in cols), None)
    genres = next((c for c in ("class", "genre", "genres", "categories", "category") if c in cols), None)
    texts: dict[str, str] = {}
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) <= id_col or not parts[id_col]:
            continue

        def get(name: str | None, parts: list[str] = parts) -> str:
            return parts[cols[name]].strip() if name and cols[name] < len(parts) else ""

        text = get(title)
        if get(year):
            text = f"{text} ({get(year)})" if text else get(year)
        if get(genres):
            text = f"{text}. Genres: {', '.join(get(genres).split())}"
        if text:
            texts[parts[id_col]] = text
    return texts


def load_atomic(inter: Path) -> Interactions:
    lines = inter.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{inter}: empty file")
    cols = _atomic_columns(lines[0])
    for need in ("user_id", "item_id"):
        if need not in cols:
            raise ValueError(f"{inter}: header {lines[0]!r} has no {need} column")
    u, i = cols["user_id"], cols["item_id"]
    t = cols.get("timestamp")
    events = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            # Seconds (possibly written as float) -> integer ms; order only without a column.
            ts = int(float(parts[t])) * 1000 if t is not None else n
        except (ValueError, IndexError):
            raise ValueError(f"{inter}:{n}: bad line {line!r}") from None
        events.append(Interaction(parts[u], parts[i], ts, "rate"))
    item_file = inter.with_suffix(".item")
    texts = _item_text_from_atomic(item_file) if item_file.is_file() else {}
    return Interactions(inter.stem, events, has_time=t is not None, item_text=texts)


def load_user_item_txt(path: Path) -> Interactions:
    events = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: expected 'user item', got {line!r}")
            events.append(Interaction(parts[0], parts[1], n, "purchase"))
    return Interactions(path.stem, events, has_time=False)


def load_event_log(path: Path) -> Interactions:
    events = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                e = Event.model_validate_json(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not a valid event: {exc}") from None
            events.append(Interaction(e.user_id, e.item_id, e.ts, e.event_type))
    return Interactions(path.stem, events, has_time=True)


def load_interactions(path: Path) -> Interactions:
    """Load any supported format; raise a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        txts = sorted(path.glob("*.txt"))
        if len(inters) == 1:
            path = inters[0]
        elif not inters and len(txts) == 1:
            path = txts[0]
        else:
            raise ValueError(f"{path}: expected one .inter or one .txt file, found "
                             f"{[p.name for p in inters + txts]}")
    if not path.is_file():
        raise FileNotFoundError(f"no data at {path}")
    if path.suffix == ".inter":
        return load_atomic(path)
    if path.suffix in (".jsonl", ".ndjson"):
        return load_event_log(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: event logs must be JSON lines (.jsonl)")
    return load_user_item_txt(path)


def write_event_log(path: Path, events: list[Event]) -> None:
    """Write events as JSON lines (used by tests and the synthetic data tools)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e.model_dump(mode="json")) + "\n")
