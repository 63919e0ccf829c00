"""``recstream bench faults``: lost, double-applied and recovery time per fault, under load.

Registered by ``recstream.cli`` (a ``commands_*`` module); the benchmark itself
is imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from recstream.cli_options import EngineOption


def _kinds(faults: str | None, engine: str, cluster: bool) -> tuple[str, ...]:
    """The faults asked for (or the default of the layout), each one this broker can take."""
    from recstream.bench.faults import CLUSTER_DEFAULT_FAULTS, DEFAULT_FAULTS, fault_refusal

    if faults is None:
        return CLUSTER_DEFAULT_FAULTS if cluster else DEFAULT_FAULTS
    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    if not kinds:
        raise typer.BadParameter("name at least one fault", param_hint="--faults")
    for kind in kinds:
        refusal = fault_refusal(kind, engine, 3 if cluster else 1)
        if refusal:
            raise typer.BadParameter(refusal, param_hint="--faults")
    return kinds


def _engine(engine: str, cluster: bool) -> str:
    """``kafka`` or ``tansu`` (``auto`` resolved here, so that faults are checked up front)."""
    from recstream.broker import BrokerError, resolve_engine

    try:
        chosen = resolve_engine(engine)
    except BrokerError as exc:
        raise typer.BadParameter(str(exc), param_hint="--engine") from None
    if cluster and chosen != "kafka":
        raise typer.BadParameter(
            "--cluster needs the kafka engine (three Kafka nodes; Tansu runs one)",
            param_hint="--cluster",
        )
    return chosen


def bench_faults(
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    faults: Annotated[str | None, typer.Option(help=(
        "comma-separated: worker_kill, scorer_kill, broker_pause, broker_kill (Kafka, one "
        "node), leader_kill (--cluster); default: worker_kill,scorer_kill,broker_pause, "
        "with --cluster leader_kill"
    ))] = None,
    engine: EngineOption = "auto",
    cluster: Annotated[bool, typer.Option(
        help="three Kafka nodes (replication 3, min.insync.replicas 2) instead of one"
    )] = False,
    rate: Annotated[float, typer.Option(min=1, help="events/s produced throughout")] = 300.0,
    users: Annotated[int, typer.Option(min=1, help="users the events are spread over")] = 200,
    pause_seconds: Annotated[
        float, typer.Option(min=1, help="how long the broker is paused")
    ] = 30.0,
    down_seconds: Annotated[float, typer.Option(
        min=0, help="how long a killed broker node stays down before its restart"
    )] = 5.0,
    load_seconds: Annotated[
        float, typer.Option(help="seconds of load before and after each fault")
    ] = 5.0,
    run_dir: Annotated[
        Path | None, typer.Option(help="logs, state and Kafka's data (default: a temp dir)")
    ] = None,
    static_membership: Annotated[bool, typer.Option(
        help="restarted processes keep their RECSTREAM_GROUP_INSTANCE_ID (static group members)"
    )] = False,
) -> None:
    """Kill the worker or the scorer, pause the broker, kill a broker node: each under load."""
    import logging

    from recstream.bench.faults import NODE_FAULTS, FaultBenchError, FaultLoad, run_faults_bench
    from recstream.bench.jsonio import write_report
    from recstream.broker import BrokerError
    from recstream.processes import ChildFailed, WorkerFailed

    chosen = _engine(engine, cluster)
    kinds = _kinds(faults, chosen, cluster)
    # A killed node refuses connections until it is back: that is the fault, not news.
    quiet = logging.CRITICAL if set(kinds) & set(NODE_FAULTS) else logging.WARNING
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(quiet)
    load = FaultLoad(
        users=users, rate=rate, before_s=load_seconds, after_s=load_seconds,
        pause_s=pause_seconds, down_s=down_seconds, static_membership=static_membership,
    )  # fmt: skip
    folder = run_dir or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    try:
        report = run_faults_bench(kinds, load, folder, engine=chosen, nodes=3 if cluster else 1)
    except (FaultBenchError, BrokerError, ChildFailed, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench faults: {exc}", err=True)
        raise typer.Exit(1) from None
    _print(report, rate, folder)
    if json_out is not None:
        write_report(json_out, report, [report["engine"]])
        typer.echo(f"wrote {json_out}")


def _print(report: dict[str, Any], rate: float, folder: Path) -> None:
    """The per-fault figures as a table: lost, applied twice, recovered_s, longest_gap_s,
    users_without_final_rec and the killed node of the JSON."""
    from rich.console import Console
    from rich.table import Table

    layout = f"{report['engine']}, {report['nodes']} node(s)"
    table = Table(title=f"bench faults at {rate:.0f} events/s on {layout} (logs in {folder})")
    table.add_column("fault", no_wrap=True)
    # Short headers: eight columns fit an 80-column terminal.
    for column in ("events", "lost", "twice", "recover s", "gap s", "no rec", "killed"):
        table.add_column(column, justify="right")
    for kind, r in report["faults"].items():
        table.add_row(
            kind, str(r["events"]), str(r["lost"]), str(r["double_applied"]),
            str(r["recovered_s"]), str(r["longest_gap_s"]), str(r["users_without_final_rec"]),
            str(r.get("killed_node", "")),
        )  # fmt: skip
    Console().print(table)


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("faults")(bench_faults)
