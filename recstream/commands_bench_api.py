"""``recstream bench api``: the HTTP API under load beside the stream
(:mod:`recstream.bench.api`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstream.cli_options import EngineOption


def bench_api(
    json_out: Annotated[Path, typer.Option("--json", help="write the results here")],
    engine: EngineOption = "auto",
    rate: Annotated[float, typer.Option(min=1, help="GET requests per second")] = 500.0,
    events_rate: Annotated[float, typer.Option(min=1, help="events per second")] = 500.0,
    seconds: Annotated[float, typer.Option(min=4, help="seconds of requests")] = 30.0,
    users: Annotated[int, typer.Option(min=10, help="synthetic users")] = 1000,
    train_budget: Annotated[float, typer.Option(
        min=1, help="seconds to train the served model first")] = 60.0,
    run_dir: Annotated[Path, typer.Option(help="logs and state")] = Path("bench-api-run"),
) -> None:
    """p50/p99 of GET /v1/users/{id}/recommendations while events stream; retired items."""
    from recstream.bench.api import ApiBenchOptions, run_api_bench

    run_api_bench(ApiBenchOptions(json_out=json_out, run_dir=run_dir, engine=engine,
                                  rate=rate, events_rate=events_rate, seconds=seconds,
                                  users=users, train_budget_s=train_budget))  # fmt: skip


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Called by ``recstream.cli`` at start-up."""
    groups["bench"].command("api")(bench_api)
