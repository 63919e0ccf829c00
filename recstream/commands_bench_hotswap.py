"""``recstream bench hotswap``: scorer latency and losses while model versions swap.

Registered by ``recstream.cli`` (a ``commands_*`` module); the bench and torch
are imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from recstream.cli_options import EngineOption


def bench_hotswap(
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    swaps: Annotated[int, typer.Option(help="versions published during the run")] = 3,
    rate: Annotated[float, typer.Option(help="score requests per second")] = 200.0,
    steady: Annotated[float, typer.Option(help="seconds of steady stream around each swap")] = 15.0,
    seq_len: Annotated[int, typer.Option(help="events per request")] = 20,
    backend: Annotated[str, typer.Option(help="scorer backend")] = "onnxruntime",
    threads: Annotated[int, typer.Option(help="scorer intra-op threads")] = 1,
    batch: Annotated[int, typer.Option(help="scorer micro-batch size")] = 64,
    n_items: Annotated[int, typer.Option(help="catalogue size of the versions")] = 2000,
    d_model: Annotated[int, typer.Option(help="model width of the versions")] = 64,
    drift: Annotated[bool, typer.Option(help="also run bench.drift for online HR@10")] = True,
    trainer: Annotated[bool, typer.Option(
        help="then run recstream trainer: freshness from an event, not from a publish")] = True,
    root: Annotated[Path | None, typer.Option(help="working folder [default: a temp dir]")] = None,
    engine: EngineOption = "auto",
) -> None:
    """p50/p99 request-to-recommendation latency steady vs around swaps, lost requests,
    swap duration and publish-to-served freshness (real broker, real scorer process)."""
    from rich.console import Console

    from recstream.bench.hotswap import (
        HotswapConfig,
        TinyModel,
        add_drift,
        format_table,
        run_hotswap_bench,
    )
    from recstream.bench.jsonio import write_report
    from recstream.broker import BrokerError
    from recstream.inference.service import BACKENDS
    from recstream.processes import ChildFailed

    if swaps < 1 or rate <= 0 or steady <= 0:
        raise typer.BadParameter("--swaps must be >= 1, --rate and --steady > 0")
    if seq_len < 1 or batch < 1 or threads < 1 or n_items < 1 or d_model < 1:
        raise typer.BadParameter("--seq-len, --batch, --threads, --n-items and --d-model "
                                 "must be >= 1")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}")
    cfg = HotswapConfig(swaps=swaps, rate=rate, steady_s=steady, seq_len=seq_len,
                        backend=backend, threads=threads, batch=batch,
                        shape=TinyModel(n_items=n_items, d_model=d_model), trainer=trainer,
                        engine=engine)
    try:
        report = run_hotswap_bench(cfg, root)
    except ValueError as exc:  # e.g. a model shape the versions cannot have
        typer.echo(f"bench hotswap: {exc}", err=True)
        raise typer.Exit(2) from None
    except (ChildFailed, BrokerError) as exc:
        typer.echo(f"bench hotswap: {exc}", err=True)
        raise typer.Exit(1) from None
    if drift:
        add_drift(report)
    Console().print(format_table(report))
    if json_out is not None:
        write_report(json_out, report, [report["engine"]])
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("hotswap")(bench_hotswap)
