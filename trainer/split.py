"""The one evaluation split (``../shared/data/README.md``): leave-one-out.

* each user's events are ordered by a *stable* sort on the integer time stamp,
  so events with equal time stamps keep their file order;
* users with fewer than 3 events are dropped;
* last event = test target, second to last = validation target, the rest = train.

The catalogue is every item of the kept users, indexed ``1..n`` in order of first
appearance in the file (0 is padding), so indices are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from recstream.inference.features import EVENT_TYPE_INDEX
from recstream.trainer.data import Interactions

MIN_EVENTS = 3


@dataclass(frozen=True)
class UserSequence:
    """One user's full, time-ordered sequence as model indices."""

    user: str
    items: list[int]
    ts: list[int]  # ms
    types: list[int]  # event-type indices


@dataclass(frozen=True)
class EvalCase:
    """Predict ``target`` after ``history``; ``history`` items are excluded unless the target."""

    user: str
    items: list[int]
    ts: list[int]
    types: list[int]
    target: int


@dataclass
class Split:
    item_ids: list[str]  # item_ids[i - 1] is the raw id of model index i
    users: list[UserSequence]
    dropped_users: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def train_sequences(self) -> Iterator[UserSequence]:
        """Each user's training part (all but the last two events)."""
        for u in self.users:
            yield UserSequence(u.user, u.items[:-2], u.ts[:-2], u.types[:-2])

    def cases(self, which: str) -> list[EvalCase]:
        """Validation cases (history = train part) or test cases (history = train + valid)."""
        if which not in ("valid", "test"):
            raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
        cut = -2 if which == "valid" else -1
        return [
            EvalCase(u.user, u.items[:cut], u.ts[:cut], u.types[:cut], u.items[cut])
            for u in self.users
        ]

    def train_item_counts(self) -> list[int]:
        """Training interactions per model index (index 0 = padding = 0)."""
        counts = [0] * (self.n_items + 1)
        for u in self.users:
            for i in u.items[:-2]:
                counts[i] += 1
        return counts


def leave_one_out(data: Interactions, min_events: int = MIN_EVENTS) -> Split:
    """Apply the protocol to ``data`` (see module docstring)."""
    if min_events < 3:
        raise ValueError("leave-one-out needs at least 3 events per user")
    by_user: dict[str, list[tuple[int, str, str]]] = {}
    for e in data.events:
        by_user.setdefault(e.user, []).append((e.ts, e.item, e.event_type))
    kept: dict[str, list[tuple[int, str, str]]] = {}
    for user, events in by_user.items():
        if len(events) >= min_events:
            # sorted() is stable: equal time stamps keep their file order.
            kept[user] = sorted(events, key=lambda ev: int(ev[0]))
    index: dict[str, int] = {}
    for e in data.events:  # first appearance in the file, kept users only
        if e.user in kept and e.item not in index:
            index[e.item] = len(index) + 1
    users = []
    for user, events in kept.items():
        users.append(UserSequence(
            user,
            [index[it] for _, it, _ in events],
            [int(ts) for ts, _, _ in events],
            [EVENT_TYPE_INDEX.get(et, 0) for _, _, et in events],
        ))
    if not users:
        raise ValueError(f"{data.name}: no user has >= {min_events} events")
    return Split(list(index), users, dropped_users=len(by_user) - len(kept))
