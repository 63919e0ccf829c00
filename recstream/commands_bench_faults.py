"""``recstream bench faults``: lost, double-applied and recovery time per fault, under load.

Registered by ``recstream.cli`` (a ``commands_*`` module); the benchmark itself
is imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer


def bench_faults(
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    faults: Annotated[
        str, typer.Option(help="comma-separated: worker_kill, scorer_kill, broker_pause")
    ] = "worker_kill,scorer_kill,broker_pause",
    rate: Annotated[float, typer.Option(min=1, help="events/s produced throughout")] = 300.0,
    users: Annotated[int, typer.Option(min=1, help="users the events are spread over")] = 200,
    pause_seconds: Annotated[
        float, typer.Option(min=1, help="how long the broker is paused")
    ] = 30.0,
    load_seconds: Annotated[
        float, typer.Option(help="seconds of load before and after each fault")
    ] = 5.0,
    run_dir: Annotated[
        Path | None, typer.Option(help="logs and state [default: a temp dir]")
    ] = None,
    static_membership: Annotated[bool, typer.Option(
        help="restarted processes keep their RECSTREAM_GROUP_INSTANCE_ID (static group members)"
    )] = False,
) -> None:
    """SIGKILL the worker, SIGKILL the scorer, SIGSTOP/SIGCONT the broker, each under load."""
    import logging

    from rich.console import Console
    from rich.table import Table

    from recstream.bench.faults import FAULTS, FaultBenchError, FaultLoad, run_faults_bench
    from recstream.bench.jsonio import write_json_atomic
    from recstream.processes import ChildFailed
    from recstream.stream.testing import WorkerFailed

    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULTS)
    if not kinds or unknown:
        raise typer.BadParameter(f"--faults: unknown {sorted(unknown)}; choose from {FAULTS}")
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    load = FaultLoad(
        users=users, rate=rate, before_s=load_seconds, after_s=load_seconds,
        pause_s=pause_seconds, static_membership=static_membership,
    )  # fmt: skip
    folder = run_dir or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    try:
        report = run_faults_bench(kinds, load, folder)
    except (FaultBenchError, ChildFailed, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench faults: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=f"bench faults at {rate:.0f} events/s (logs in {folder})")
    for column in ("fault", "events", "lost", "double_applied", "recovered_s", "no final rec"):
        table.add_column(column, justify="right")
    for kind, r in report["faults"].items():
        table.add_row(
            kind, str(r["events"]), str(r["lost"]), str(r["double_applied"]),
            str(r["recovered_s"]), str(r["users_without_final_rec"]),
        )  # fmt: skip
    Console().print(table)
    if json_out is not None:
        write_json_atomic(json_out, report)
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("faults")(bench_faults)
