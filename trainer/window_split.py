"""Training data and the prequential hold-out, cut from a snapshot of the window.

The catalogue keeps the current version's item order (so its rows can be copied
into the candidate) and appends items new to it in order of first arrival.
Each user whose newest event arrived after the trained watermark (so no model
has trained on it), who has some history before it, and whose newest item is
new to them is a hold-out case: history = everything before that event, target
= that event. A repeat (the click after its view) is no case: the scorer never
recommends an item of the user's history, so no model can earn it online. The candidate
trains on everything else; candidate and current are then ranked on the same
cases by the project's evaluator (:func:`trainer.evaluate.evaluate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from recstream.inference.features import EVENT_TYPE_INDEX
from recstream.trainer.split import EvalCase, Split, UserSequence
from recstream.trainer.window import UserRows


@dataclass
class WindowSplit(Split):
    """A :class:`Split` whose "valid" and "test" cases are both the hold-out."""

    held_out: set[str] = field(default_factory=set)
    new_items: int = 0  # items appended after the base catalogue

    def train_sequences(self) -> Iterator[UserSequence]:
        for u in self.users:
            if u.user in self.held_out:
                yield UserSequence(u.user, u.items[:-1], u.ts[:-1], u.types[:-1])
            else:
                yield u

    def cases(self, which: str) -> list[EvalCase]:
        if which not in ("valid", "test"):
            raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
        return [
            EvalCase(u.user, u.items[:-1], u.ts[:-1], u.types[:-1], u.items[-1])
            for u in self.users
            if u.user in self.held_out
        ]

    def train_item_counts(self) -> list[int]:
        counts = [0] * (self.n_items + 1)
        for u in self.train_sequences():
            for i in u.items:
                counts[i] += 1
        return counts

    @property
    def n_train_events(self) -> int:
        return sum(len(u.items) for u in self.train_sequences())


def window_split(
    snapshot: Iterable[UserRows], base_items: list[str], trained_seq: int
) -> WindowSplit:
    """Build the split; ``base_items`` is the current version's catalogue (or ``[]``)."""
    users = list(snapshot)
    index = {item: i + 1 for i, item in enumerate(base_items)}
    item_ids = list(base_items)
    # New items in order of arrival (window sequence number): deterministic.
    for _, item in sorted((r[0], r[2]) for u in users for r in u.rows):
        if item not in index:
            index[item] = len(item_ids) + 1
            item_ids.append(item)
    sequences, held = [], set()
    for u in users:
        sequences.append(UserSequence(
            u.user,
            [index[r[2]] for r in u.rows],
            [int(r[3]) for r in u.rows],
            [EVENT_TYPE_INDEX.get(r[4], 0) for r in u.rows],
        ))
        newest = u.rows[-1] if u.rows else None
        if (newest is not None and len(u.rows) >= 2 and newest[0] > trained_seq
                and all(r[2] != newest[2] for r in u.rows[:-1])):
            held.add(u.user)
    return WindowSplit(item_ids, sequences, dropped_users=0, held_out=held,
                       new_items=len(item_ids) - len(base_items))
