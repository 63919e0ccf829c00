"""The demo's synthetic stream as benchmark data (``bench quality --dataset synthetic``,
``bench versus-cooccurrence``).

The stream is the one ``recstream demo`` replays at its defaults: sessions,
drifting interests, category affinity, a view -> click -> purchase funnel,
item text = title and category. Unlike MovieLens' rating times, its time stamps
carry signal (session gaps, the age of each event), so it is where time
encodings must show their worth. Only cases whose target is new to the user
are ranked: the scorer excludes a user's history, so a repeat (a click after
its view) can never be recommended online.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: What ``recstream demo`` replays at its defaults.
DEMO_EVENTS, DEMO_USERS, DEMO_ITEMS, DEMO_SEED = 40_600, 2000, 1000, 7
#: A fixed start, so a seed gives the same time stamps (and data hash) on every run.
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def demo_interactions(events: int = DEMO_EVENTS, users: int = DEMO_USERS,
                      items: int = DEMO_ITEMS, seed: int = DEMO_SEED,
                      shape: dict[str, float] | None = None,
                      start_ms: int | None = START_MS) -> tuple[Any, str]:
    """(``trainer.data.Interactions`` of the generated stream, sha256 of its events and
    texts). ``shape``: ``StreamShape`` fields to change from their defaults."""
    from recstream.trainer.data import Interaction, Interactions

    from recstream.synthetic import StreamShape, generate

    stream = generate(n_events=events, n_users=users, n_items=items, seed=seed,
                      start_ms=start_ms, shape=StreamShape(**(shape or {})))
    texts = {i.item_id: f"{i.title}. {i.category}" for i in stream.items.values()}
    data = Interactions("synthetic", [Interaction(e.user_id, e.item_id, e.ts, e.event_type)
                                      for e in stream.events], True, texts)  # fmt: skip
    digest = hashlib.sha256()
    for e in data.events:
        digest.update(f"{e.user}\t{e.item}\t{e.ts}\t{e.event_type}\n".encode())
    for item, text in sorted(texts.items()):
        digest.update(f"{item}\t{text}\n".encode())
    return data, digest.hexdigest()


def new_item_cases(split: Any) -> None:
    """Keep only cases whose target the user has not had (what serving can show)."""
    every = split.cases

    def cases(which: str) -> list[Any]:
        return [c for c in every(which) if c.target not in c.items]

    split.cases = cases
