"""``recstream bench stream --at-cap``: the worker's rate once every user's sequence is full.

From an empty table each event lengthens a short sequence; in a stream that has
run for a while most active users hold ``RECSTREAM_MAX_SEQ_LEN`` events, and each
new event rewrites a full window and evicts its oldest entry. This phase measures
that steady state on a broker of its own: a first worker applies
``max_seq_len`` events to each of ``--at-cap-users`` users and stops; the table is
read to check that every user is at the cap; then ``--at-cap-events`` newer
events for the same users are produced as a backlog, and a second worker on the
same state drains them, timed as the throughput phase times its worker (rate
between 10% and 90% of the backlog, CPU per event from ready to done).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from recstream.bench.stream import (
    BenchError,
    StreamBenchConfig,
    drain,
    phase_broker,
    phase_env,
    sustained_rate,
)
from recstream.bench.stream_io import produce_all, synthetic_records
from recstream.schemas.topics import EVENTS
from recstream.stream.settings import WorkerSettings
from rich.console import Console

from recstream.readback import read_table

#: The at-cap phase's broker, state and logs are numbered after the other phases'.
PHASE = 3


def at_cap_records(
    users: int, cap: int, events: int, seed: int
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """(prefill, timed): synthetic events dealt round-robin to ``users`` users,
    ``cap`` each for the prefill, then ``events`` more. Each user's events stay in
    time order, so every timed event is newer than the user's whole window."""
    out = []
    for i, (_, value) in enumerate(synthetic_records(users * cap + events, users, seed)):
        event = orjson.loads(value)
        event["user_id"] = user = f"u{i % users:06d}"
        out.append((user.encode(), orjson.dumps(event)))
    return out[: users * cap], out[users * cap :]


def _produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    _, failures = asyncio.run(produce_all(bootstrap, records, EVENTS))
    if failures:
        raise BenchError(f"{failures} of {len(records)} events could not be produced")


def run_at_cap(cfg: StreamBenchConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    """The worker's rate and CPU per event with every user at the cap (see the module)."""
    users = cfg.at_cap_users
    with phase_broker(cfg, run_dir, PHASE) as broker:
        env = phase_env(cfg, broker.bootstrap, run_dir / f"state-{PHASE}")
        cap = WorkerSettings.from_env(env).max_seq_len  # what the worker will keep
        prefill, timed = at_cap_records(users, cap, cfg.at_cap_events, cfg.seed + 1000)
        console.print(f"at the cap: {users:,} users x {cap} events first, then "
                      f"{len(timed):,} timed events")  # fmt: skip
        _produce(broker.bootstrap, prefill)
        first = drain(env, run_dir / f"worker-{PHASE}-prefill.log", len(prefill), cfg, console)
        states = read_table(Path(env["RECSTREAM_STATE_DIR"]), cfg.partitions)
        full = sum(len(state) >= cap for state in states.values())
        if full < users or first.samples[-1][1] < len(prefill):
            raise BenchError(f"the prefill left {users - full} of {users} users below "
                             f"RECSTREAM_MAX_SEQ_LEN={cap}: no rate at the cap")  # fmt: skip
        _produce(broker.bootstrap, timed)
        done = drain(env, run_dir / f"worker-{PHASE}.log", len(timed), cfg, console)
    rate, overall = sustained_rate(done.samples, len(timed))
    return {
        "max_seq_len": cap,
        "at_cap_users": users,
        "at_cap_prefill_events": len(prefill),
        "at_cap_users_full": full,
        "at_cap_events": len(timed),
        "events_per_s_at_cap": round(rate),
        "events_per_s_overall_at_cap": round(overall),
        "cpu_us_per_event_at_cap": done.cpu_us_per_event,
        "worker_ready_s_at_cap": round(done.ready_s, 1),
        "duplicates_at_cap": int(done.metrics.get("recstream_worker_events_duplicate_total", 0)),
        "lost_at_cap": int(len(timed) - done.samples[-1][1]),
    }
