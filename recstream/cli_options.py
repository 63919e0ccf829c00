"""Command-line options shared by several commands (broker, demo, benchmarks)."""

from __future__ import annotations

from typing import Annotated

import typer

from recstream.broker import ENGINES

ENGINE_HELP = (
    "broker engine: kafka (Apache Kafka in KRaft mode, jars fetched once from Maven "
    "Central, data on disk), tansu (embedded, in memory, no Java), auto (kafka where "
    "a Java 17+ is found, else tansu)"
)


def check_engine(value: str) -> str:
    if value not in ENGINES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ENGINES)}")
    return value


EngineOption = Annotated[str, typer.Option("--engine", callback=check_engine, help=ENGINE_HELP)]
