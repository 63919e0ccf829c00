"""``recstream dashboard`` and ``recstream top``: watching the stack live."""

from __future__ import annotations

from typing import Annotated

import typer


def dashboard(
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers [default: RECSTREAM_KAFKA_BOOTSTRAP]"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to serve the page on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="port of the page (0: any free port)")
    ] = 8050,
    worker_metrics: Annotated[
        list[str] | None,
        typer.Option(help="a worker's metrics URL, e.g. http://127.0.0.1:9101 (repeatable)"),
    ] = None,
    scorer_metrics: Annotated[
        list[str] | None, typer.Option(help="a scorer's metrics URL (repeatable)")
    ] = None,
) -> None:
    """Serve the live dashboard page (throughput, latency, lag, online HR@10, a user's timeline)."""
    import dataclasses

    from recstream.dashboard import DashboardSettings, run_dashboard
    from recstream.schemas.settings import KafkaSettings

    try:
        kafka = KafkaSettings.from_env()
    except ValueError as exc:
        typer.echo(f"dashboard: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None
    if bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap=bootstrap)
    settings = DashboardSettings(
        kafka=kafka,
        host=host,
        port=port,
        worker_metrics=tuple(worker_metrics or ()),
        scorer_metrics=tuple(scorer_metrics or ()),
    )
    run_dashboard(settings, announce=lambda line: typer.echo(line))


def top(
    url: Annotated[
        str, typer.Option(help="the dashboard's URL (recstream demo prints it)")
    ] = "http://127.0.0.1:8050",
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between refreshes")] = 1.0,
    iterations: Annotated[
        int | None, typer.Option(help="stop after this many refreshes [default: until Ctrl-C]")
    ] = None,
) -> None:
    """A live terminal view of the dashboard's figures."""
    from recstream.top import TopError, run_top

    try:
        run_top(url, interval_s=interval, iterations=iterations)
    except TopError as exc:
        typer.echo(f"top: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    app.command()(dashboard)
    app.command()(top)
