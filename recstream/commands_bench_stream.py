"""``recstream bench stream``: events/s into the table, event→recommendation latency, memory.

Registered by ``recstream.cli`` (a ``commands_*`` module); the benchmark itself
is imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer


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
            help="what the latency phase's scorer serves: sequence (a MovieLens-1M-shaped "
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
) -> None:
    """Replay events through a real broker into a real worker (and scorer): rate, latency, RSS."""
    import logging

    from rich.console import Console

    if soak_s > 0:
        _soak(json_out, soak_s, soak_rate, soak_sample_s, partitions, run_dir)
        return

    from recstream.bench.jsonio import write_json_atomic
    from recstream.bench.stream import BenchError, StreamBenchConfig, format_table, run_stream_bench
    from recstream.movielens import DataFormatError
    from recstream.processes import ChildFailed
    from recstream.stream.testing import WorkerFailed

    try:
        cfg = StreamBenchConfig(
            events=events, data=data, users=users, latency_seconds=latency_seconds,
            latency_rate=latency_rate, producer_linger_ms=producer_linger_ms,
            fetch_wait_ms=fetch_wait_ms, partitions=partitions, scorer_model=scorer_model,
            run_dir=run_dir,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    # The clients log every connection at INFO: noise between the figures.
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console()
    try:
        report = run_stream_bench(cfg, console)
    except DataFormatError as exc:
        typer.echo(f"bench stream: --data: {exc}", err=True)
        raise typer.Exit(2) from None
    except (BenchError, ChildFailed, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench stream: {exc}", err=True)
        raise typer.Exit(1) from None
    console.print(format_table(report))
    if json_out is not None:
        write_json_atomic(json_out, report)
        typer.echo(f"wrote {json_out}")


def _soak(
    json_out: Path | None,
    seconds: float,
    rate: float,
    sample_s: float,
    partitions: int,
    run_dir: Path | None,
) -> None:
    import logging

    from rich.console import Console

    from recstream.bench.jsonio import write_json_atomic
    from recstream.bench.soak import SoakConfig, SoakError, format_soak_table, run_soak
    from recstream.stream.testing import WorkerFailed

    try:
        cfg = SoakConfig(
            seconds=seconds, rate=rate, sample_every_s=sample_s, partitions=partitions,
            run_dir=run_dir,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console()
    try:
        report = run_soak(cfg, console)
    except (SoakError, WorkerFailed, TimeoutError) as exc:
        typer.echo(f"bench stream --soak-s: {exc}", err=True)
        raise typer.Exit(1) from None
    console.print(format_soak_table(report))
    if json_out is not None:
        write_json_atomic(json_out, report)
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("stream")(bench_stream)
