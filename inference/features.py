"""Feature building shared by training and serving.

Training and serving must turn a sequence of ``(item, ts, event_type)`` into the
model's input tensors in exactly the same way, or the served model sees inputs it
was never trained on. This module is that single place:

* item ids -> model indices (0 is padding, catalogue items are ``1..n_items``);
* event types -> indices (0 is padding, then ``schemas.messages.EVENT_TYPES`` order);
* time stamps -> float seconds *relative to a per-sequence reference* (float32
  cannot hold epoch milliseconds precisely; relative seconds it can);
* left padding and left truncation to the model's ``max_len`` (the most recent
  events are kept, the newest event is always at the last position).

The bucketing of time gaps and ages (:func:`log_time_bucket`) is a pure torch
function used *inside* the model, so the exported graph does it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from recstream.schemas.messages import EVENT_TYPES

PAD = 0
#: Event-type index of an unknown/absent type (``EVENT_TYPES`` start at 1).
EVENT_TYPE_INDEX: dict[str, int] = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}
N_EVENT_TYPE_IDS = len(EVENT_TYPES) + 1


def log_time_bucket(seconds: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket non-negative durations (seconds, float) on a log2 scale.

    Bucket 0 is reserved for "no duration" (padding / first event) by the callers;
    durations map to ``1 + floor(log2(1 + s))`` clamped to ``[1, n_buckets - 1]``,
    so 0 s -> 1, 1 s -> 2, 1 min -> 6, 1 h -> 12, 1 day -> 17, 1 year -> 25.
    Negative inputs (clock skew, out-of-order events) are treated as 0.
    Only elementwise ops, so it exports to ONNX.
    """
    s = torch.clamp(seconds, min=0.0)
    b = torch.floor(torch.log2(s + 1.0)).to(torch.long) + 1
    return torch.clamp(b, min=1, max=n_buckets - 1)


@dataclass(frozen=True)
class SequenceBatch:
    """Model inputs for a batch of sequences, left-padded to one length.

    ``times`` are seconds relative to each row's reference time (its newest
    event or its trigger time), ``query_times`` the prediction time seen from
    each position: the time of that position's own event, except that serving
    may set the last one to the trigger time.
    """

    items: torch.Tensor  # [B, L] long, 0 = pad
    event_types: torch.Tensor  # [B, L] long, 0 = pad
    times: torch.Tensor  # [B, L] float32 seconds
    query_times: torch.Tensor  # [B, L] float32 seconds


def encode_event_types(types: Sequence[str]) -> list[int]:
    """Map event-type names to indices; unknown names raise (they are a schema bug)."""
    try:
        return [EVENT_TYPE_INDEX[t] for t in types]
    except KeyError as exc:
        raise ValueError(f"unknown event type {exc.args[0]!r}; known: {EVENT_TYPES}") from None


def build_batch(
    items: Sequence[Sequence[int]],
    ts_ms: Sequence[Sequence[int]],
    event_types: Sequence[Sequence[int]],
    max_len: int,
    trigger_ts_ms: Sequence[int | None] | None = None,
) -> SequenceBatch:
    """Left-truncate and left-pad sequences (oldest first) into a :class:`SequenceBatch`.

    ``items`` are model indices (``>= 1``), ``event_types`` event-type indices.
    ``trigger_ts_ms[b]`` (optional) is the prediction time for row ``b``: the last
    position's query time becomes ``max(trigger, newest ts)``; otherwise the
    newest event's time is the prediction time (what training sees at every
    position). Empty sequences give an all-padding row.
    """
    if not (len(items) == len(ts_ms) == len(event_types)):
        raise ValueError("items, ts and event_types must have one row per sequence")
    n = len(items)
    # Filled row by row in numpy (a slice assignment per row, not a Python
    # float per event): the scorer builds a batch per micro-batch, and this
    # was a third of its in-process time at L=200.
    out_items = np.zeros((n, max_len), dtype=np.int64)
    out_types = np.zeros((n, max_len), dtype=np.int64)
    out_times = np.zeros((n, max_len), dtype=np.float32)
    for b in range(n):
        seq, ts, et = items[b], ts_ms[b], event_types[b]
        if not (len(seq) == len(ts) == len(et)):
            raise ValueError(f"row {b}: items, ts and event_types differ in length")
        m = min(len(seq), max_len)
        if m == 0:
            continue
        t = np.asarray(ts[len(ts) - m :], dtype=np.int64)
        ref = int(t[-1])
        trigger = trigger_ts_ms[b] if trigger_ts_ms is not None else None
        if trigger is not None:
            ref = max(ref, int(trigger))
        out_items[b, max_len - m :] = seq[len(seq) - m :]
        out_types[b, max_len - m :] = et[len(et) - m :]
        # Relative seconds, computed in integer ms first (float32 cannot hold
        # epoch milliseconds), divided in float64, rounded once to float32.
        out_times[b, max_len - m :] = (t - ref) / 1000.0
    out_query = out_times.copy()
    out_query[:, -1] = 0.0  # the reference time: newest event or the later trigger
    return SequenceBatch(*(torch.from_numpy(a) for a in (out_items, out_types, out_times,
                                                         out_query)))
