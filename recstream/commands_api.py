"""``recstream api``: the HTTP API over the stream's topics."""

from __future__ import annotations

from typing import Annotated

import typer


def api(
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="listen port (0: any free) [default: "
                     "RECSTREAM_API_PORT or 8000]"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="listen address [default: RECSTREAM_API_HOST or 127.0.0.1]")
    ] = None,
) -> None:
    """Serve users' latest lists, trending items and event intake over HTTP (OpenAPI)."""
    import dataclasses

    from recstream.api import ApiSettings, run_api

    try:
        settings = ApiSettings.from_env()
    except ValueError as exc:
        typer.echo(f"api: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None
    if port is not None:
        settings = dataclasses.replace(settings, port=port)
    if host is not None:
        settings = dataclasses.replace(settings, host=host)
    run_api(settings, announce=lambda line: typer.echo(line))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    app.command()(api)
