"""``recstream bench versus-cooccurrence``: ours against the scorer's fallback, offline,
on the demo's synthetic stream (:mod:`recstream.bench.versus_cooccurrence`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench_versus(
    json_out: Annotated[Path, typer.Option("--json", help="write the results here")],
    events: Annotated[int, typer.Option(min=1000, help="synthetic events")] = 40_600,
    users: Annotated[int, typer.Option(min=10)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    seed: Annotated[int, typer.Option(help="stream seed (the demo's: 7)")] = 7,
    max_epochs: Annotated[int, typer.Option(min=1)] = 200,
    patience: Annotated[int, typer.Option(min=1)] = 5,
    shape: Annotated[list[str] | None, typer.Option(
        help="a StreamShape field=value to change, e.g. taste=0.8 (repeatable)")] = None,
) -> None:
    """Same events, same new-item cases: co-occurrence vs ours (with and without text)."""
    from recstream.bench.versus_cooccurrence import VersusOptions, run_versus

    run_versus(VersusOptions(json_out=json_out, events=events, users=users, items=items,
                             seed=seed, max_epochs=max_epochs, patience=patience,
                             shape=_shape(shape or [])))  # fmt: skip


def _shape(pairs: list[str]) -> dict[str, float]:
    """``["taste=0.8"]`` -> ``{"taste": 0.8}``, refusing fields the stream does not have."""
    from dataclasses import fields

    from recstream.synthetic import StreamShape

    known = {f.name for f in fields(StreamShape)}
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise typer.BadParameter(f"{pair!r}: expected FIELD=VALUE, FIELD one of {sorted(known)}")
        out[name] = float(value)
    return out


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Called by ``recstream.cli`` at start-up."""
    groups["bench"].command("versus-cooccurrence")(bench_versus)
