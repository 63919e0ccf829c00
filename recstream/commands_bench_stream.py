"""``recstream bench stream``: events/s into the table, event→recommendation latency, memory.

Registered by ``recstream.cli`` (a ``commands_*`` module); the benchmark itself
is imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recstream.broker import ENGINES
from recstream.cli_options import ENGINE_HELP

if TYPE_CHECKING:
    from recstream.bench.stream import StreamBenchConfig

#: ``--engine`` of ``bench stream`` also takes this: the whole benchmark on each engine.
BOTH = "both"


def _check_engine(value: str) -> str:
    if value not in (*ENGINES, BOTH):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join((*ENGINES, BOTH))}")
    return value


BenchEngineOption = Annotated[
    str,
    typer.Option(
        "--engine", callback=_check_engine,
        help=f"{ENGINE_HELP}; both: the whole benchmark on tansu, then on kafka, side by side "
        "(not with --soak-s)",
    ),
]  # fmt: skip
AtCapOption = Annotated[
    bool,
    typer.Option(
        "--at-cap",
        help="also time the worker with every user already at RECSTREAM_MAX_SEQ_LEN events "
        "(events_per_s_at_cap, cpu_us_per_event_at_cap)",
    ),
]
AtCapUsersOption = Annotated[int, typer.Option(help="users of the --at-cap phase")]
AtCapEventsOption = Annotated[
    int, typer.Option(help="timed events of the --at-cap phase, after each user is at the cap")
]


def bench_stream(
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    events: Annotated[int, typer.Option(help="events to replay")] = 1_000_000,
    data: Annotated[
        Path | None, typer.Option(help="MovieLens atomic folder (.inter) instead of synthetic")
    ] = None,
    users: Annotated[
        int | None, typer.Option(help="synthetic users [default: one per 20 events]")
    ] = None,
    latency_seconds: Annotated[
        float, typer.Option(help="seconds of replay at half the max rate, for latency")
    ] = 20.0,
    latency_rate: Annotated[
        float | None, typer.Option(help="replay the latency phase at this events/s instead")
    ] = None,
    producer_linger_ms: Annotated[
        int,
        typer.Option(
            help="the load generator's producer linger in the latency phase (5: librdkafka's "
            "and Kafka 4's default); the embedded broker slows with the batches it stores",
        ),
    ] = 5,
    fetch_wait_ms: Annotated[
        int,
        typer.Option(
            help="fetch wait of the worker's, the scorer's and the reader's consumers "
            "(RECSTREAM_FETCH_WAIT_MS, RECSTREAM_SCORER_FETCH_WAIT_MS)",
        ),
    ] = 20,
    partitions: Annotated[
        int,
        typer.Option(
            help="partitions of every topic of the run; the embedded broker's fetch cost "
            "grows with the batches stored per partition",
        ),
    ] = 4,
    scorer_model: Annotated[
        str,
        typer.Option(
            help="what the latency phase's (and the soak's) scorer serves: sequence (a MovieLens-1M-shaped "
            "model over the replayed items, ONNX Runtime on a CPU), cooccurrence (the "
            "scorer's fallback without a model) or a model version folder",
        ),
    ] = "sequence",
    run_dir: Annotated[
        Path | None, typer.Option(help="logs and state [default: a temp dir]")
    ] = None,
    soak_s: Annotated[
        float,
        typer.Option(
            "--soak-s",
            help="instead: a memory soak of this many seconds at --soak-rate (RSS slope)",
        ),
    ] = 0.0,
    soak_rate: Annotated[float, typer.Option(help="events/s during the soak")] = 1000.0,
    soak_sample_s: Annotated[float, typer.Option(help="seconds between RSS samples")] = 5.0,
    engine: BenchEngineOption = "auto",
    at_cap: AtCapOption = False,
    at_cap_users: AtCapUsersOption = 1000,
    at_cap_events: AtCapEventsOption = 200_000,
) -> None:
    """Replay events through a real broker into a real worker (and scorer): rate, latency, RSS."""
    if soak_s > 0:
        _soak(json_out, soak_s, soak_rate, soak_sample_s, partitions, run_dir, engine,
              scorer_model)
        return

    from recstream.bench.stream import StreamBenchConfig

    try:
        cfg = StreamBenchConfig(
            events=events, data=data, users=users, latency_seconds=latency_seconds,
            latency_rate=latency_rate, producer_linger_ms=producer_linger_ms,
            fetch_wait_ms=fetch_wait_ms, partitions=partitions, scorer_model=scorer_model,
            run_dir=run_dir, engine="auto" if engine == BOTH else engine, at_cap=at_cap,
            at_cap_users=at_cap_users, at_cap_events=at_cap_events,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _stream(cfg, engine == BOTH, json_out)


def _quiet_clients() -> None:
    """The clients log every connection at INFO: noise between the figures."""
    import logging

    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _write(
    json_out: Path | None, report: dict[str, Any], found: dict[str, Any], engines: list[str]
) -> None:
    """The report with where it came from: ``found``, the :func:`provenance` taken as
    the run began, and the versions of the ``engines`` it ran on."""
    from recstream.bench.jsonio import write_json_atomic
    from recstream.bench.provenance import with_engines

    if json_out is not None:
        write_json_atomic(json_out, {**report, **with_engines(found, engines)})
        typer.echo(f"wrote {json_out}")


def _stream(cfg: StreamBenchConfig, both: bool, json_out: Path | None) -> None:
    """Run the stream benchmark (on each engine when ``both``), print its table, write JSON."""
    from rich.console import Console

    from recstream.bench import stream
    from recstream.bench.provenance import provenance
    from recstream.broker import BrokerError
    from recstream.movielens import DataFormatError
    from recstream.processes import ChildFailed, WorkerFailed

    _quiet_clients()
    console = Console()
    found = provenance()  # the code and machine as the run begins
    try:
        report = (stream.run_both_engines if both else stream.run_stream_bench)(cfg, console)
    except DataFormatError as exc:
        typer.echo(f"bench stream: --data: {exc}", err=True)
        raise typer.Exit(2) from None
    except (stream.BenchError, BrokerError, ChildFailed, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench stream: {exc}", err=True)
        raise typer.Exit(1) from None
    if both:
        console.print(stream.format_engines_table(report["engines"]))
    else:
        console.print(stream.format_table(report))
    _write(json_out, report, found, list(report["engines"]) if both else [report["engine"]])


def _soak(
    json_out: Path | None,
    seconds: float,
    rate: float,
    sample_s: float,
    partitions: int,
    run_dir: Path | None,
    engine: str,
    scorer_model: str,
) -> None:
    from rich.console import Console

    from recstream.bench.provenance import provenance
    from recstream.bench.soak import SoakConfig, SoakError, format_soak_table, run_soak
    from recstream.broker import BrokerError
    from recstream.processes import WorkerFailed

    if engine == BOTH:
        raise typer.BadParameter("--engine both is for the stream benchmark; run the soak "
                                 "once per engine", param_hint="--engine")  # fmt: skip
    try:
        cfg = SoakConfig(
            seconds=seconds, rate=rate, sample_every_s=sample_s, partitions=partitions,
            run_dir=run_dir, engine=engine, scorer_model=scorer_model,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _quiet_clients()
    console = Console()
    found = provenance()
    try:
        report = run_soak(cfg, console)
    except (SoakError, BrokerError, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench stream --soak-s: {exc}", err=True)
        raise typer.Exit(1) from None
    console.print(format_soak_table(report))
    _write(json_out, report, found, [report["engine"]])


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("stream")(bench_stream)
