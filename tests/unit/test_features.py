"""Feature building: the vectorised ``build_batch`` against a plain reference."""

from __future__ import annotations

import random

import torch
from recstream.inference.features import build_batch


def _reference(items, ts_ms, types, max_len, triggers=None):  # type: ignore[no-untyped-def]
    """The definition, one Python float per event (the implementation before numpy)."""
    n = len(items)
    out = [torch.zeros(n, max_len, dtype=torch.long), torch.zeros(n, max_len, dtype=torch.long),
           torch.zeros(n, max_len), torch.zeros(n, max_len)]
    for b in range(n):
        seq, ts, et = items[b][-max_len:], ts_ms[b][-max_len:], types[b][-max_len:]
        m = len(seq)
        if m == 0:
            continue
        ref = ts[-1] if triggers is None or triggers[b] is None else max(ts[-1], triggers[b])
        rel = torch.tensor([(t - ref) / 1000.0 for t in ts], dtype=torch.float32)
        out[0][b, max_len - m :] = torch.tensor(seq)
        out[1][b, max_len - m :] = torch.tensor(et)
        out[2][b, max_len - m :] = rel
        out[3][b, max_len - m :] = rel
        out[3][b, -1] = 0.0
    return out


def test_build_batch_matches_the_reference_bit_for_bit() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n, max_len = rng.randint(1, 5), rng.randint(1, 12)
        items, ts, types, triggers = [], [], [], []
        for _ in range(n):
            m = rng.randint(0, 15)
            base = rng.randint(0, 2**41)  # epoch milliseconds and beyond
            ts.append(sorted(base + rng.randint(-10**10, 10**10) for _ in range(m)))
            items.append([rng.randint(1, 99) for _ in range(m)])
            types.append([rng.randint(1, 5) for _ in range(m)])
            triggers.append(None if rng.random() < 0.3 else base + rng.randint(-10**9, 10**11))
        use = triggers if rng.random() < 0.7 else None
        got = build_batch(items, ts, types, max_len, trigger_ts_ms=use)
        want = _reference(items, ts, types, max_len, use)
        for g, w in zip((got.items, got.event_types, got.times, got.query_times), want,
                        strict=True):
            assert g.dtype == w.dtype and torch.equal(g, w), (items, ts, max_len, use)
