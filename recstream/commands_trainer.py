"""``recstream trainer``, ``recstream models list|rollback`` and ``recstream bench drift``.

Found by ``recstream.cli`` (``register(app, groups)``); torch and the trainer
are imported inside the commands.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

log = logging.getLogger("recstream.trainer")

RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="model registry folder (default: RECSTREAM_MODEL_REGISTRY "
                                    "or ./models)"),
]


def _registry_dir(registry: Path | None) -> Path:
    return registry or Path(os.environ.get("RECSTREAM_MODEL_REGISTRY") or "models")


def _existing_registry(registry: Path | None, command: str) -> Path:
    """The registry folder, which must exist: a mistyped path is not an empty registry."""
    root = _registry_dir(registry)
    if not root.is_dir():
        typer.echo(f"{command}: no model registry at {root} (--registry or "
                   "RECSTREAM_MODEL_REGISTRY)", err=True)
        raise typer.Exit(2)
    return root


def trainer(
    registry: RegistryOpt = None,
    items: Annotated[Path | None, typer.Option(
        help="item catalogue with texts (.item, .jsonl item_id/text, or item_id<TAB>text)")] = None,
    every_events: Annotated[int | None, typer.Option(help="run a round after M new events")] = None,
    every_minutes: Annotated[float | None, typer.Option(help="... or after T minutes")] = None,
    budget_s: Annotated[float | None, typer.Option(help="training seconds per round")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per round at most")] = None,
    tolerance: Annotated[float | None, typer.Option(
        help="publish if candidate NDCG@10 >= current - this")] = None,
    min_holdout: Annotated[int | None, typer.Option(help="hold-out users needed to compare")] = None,
    keep: Annotated[int | None, typer.Option(help="versions kept in the registry")] = None,
    window_events: Annotated[int | None, typer.Option(help="last N events per user")] = None,
    window_days: Annotated[float | None, typer.Option(help="last D days of events")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="window and state file folder")] = None,
) -> None:
    """Consume events into a training window; fine-tune, validate and publish model versions."""
    from recstream.trainer.continuous import run_trainer
    from recstream.trainer.settings import TrainerSettings

    try:
        settings = TrainerSettings.from_env()
        flags = {"registry": registry, "items": items, "every_events": every_events,
                 "every_minutes": every_minutes, "budget_s": budget_s, "epochs": epochs,
                 "tolerance": tolerance, "min_holdout": min_holdout, "keep": keep,
                 "window_events": window_events, "window_days": window_days,
                 "state_dir": state_dir}
        settings = dataclasses.replace(settings, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        typer.echo(f"trainer: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.items is not None and not settings.items.is_file():
        typer.echo(f"trainer: no item catalogue at {settings.items}", err=True)
        raise typer.Exit(2)
    from kafka.errors import KafkaError

    from recstream.schemas.probes import ProbePortError
    from recstream.schemas.state_lock import StateDirError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run_trainer(settings, stop)
    except (ProbePortError, StateDirError) as exc:
        typer.echo(f"trainer: {exc}", err=True)
        raise typer.Exit(2) from None
    # No broker answering: kafka-python 3 times out bootstrapping (KafkaTimeoutError),
    # 2.x raised NoBrokersAvailable; both are KafkaErrors. Not a usage error.
    except KafkaError as exc:
        typer.echo(f"trainer: Kafka at {settings.kafka.bootstrap} failed ({exc!r}); check "
                   "RECSTREAM_KAFKA_BOOTSTRAP and that the brokers are up", err=True)
        raise typer.Exit(1) from None


def models_list(registry: RegistryOpt = None) -> None:
    """Published versions, oldest first, with their hold-out figures; * marks CURRENT."""
    from rich.console import Console
    from rich.table import Table

    from recstream.inference.registry import Registry

    reg = Registry(_existing_registry(registry, "models list"))
    versions = reg.versions()
    try:
        current = reg.current()
    except KeyError as exc:  # CURRENT names a version that is not (or no longer) there
        typer.echo(f"models list: CURRENT is broken: {exc.args[0]}", err=True)
        current = None
    table = Table(title=f"model versions in {reg.root}")
    for col in ("", "version", "published (UTC)", "ndcg@10", "hr@10", "current's ndcg@10",
                "parent"):
        table.add_column(col)
    for v in versions:
        held = v.metrics.get("holdout") or {}
        cur = v.metrics.get("holdout_current") or {}
        table.add_row(
            "*" if current is not None and v.version == current.version else "",
            v.version,
            datetime.fromtimestamp(v.published_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _fmt(held.get("ndcg@10")), _fmt(held.get("hr@10")), _fmt(cur.get("ndcg@10")),
            str(v.metrics.get("parent") or ""),
        )
    Console().print(table)
    if not versions:
        typer.echo(f"no versions published in {reg.root}")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""


def models_rollback(
    version: Annotated[str, typer.Argument(help="a published version, e.g. v000003-1a2b3c4d5e6f")],
    registry: RegistryOpt = None,
    model_name: Annotated[str | None, typer.Option(
        help="key of the update (default: RECSTREAM_TRAINER_MODEL_NAME or recstream)")] = None,
    announce: Annotated[bool, typer.Option("--announce/--no-announce",
                                           help="send a model-updates message")] = True,
) -> None:
    """Make VERSION the current one and announce it on model-updates."""
    from recstream.inference.registry import ArtifactError, Registry, verify_version_dir
    from recstream.trainer.continuous import kafka_producer, send_update
    from recstream.trainer.settings import TrainerSettings

    reg = Registry(_existing_registry(registry, "rollback"))
    try:
        info = reg.get(version)
        verify_version_dir(info.path, info.sha256)
    except KeyError as exc:
        typer.echo(f"rollback: {exc.args[0]}", err=True)  # str(KeyError) adds quotes
        raise typer.Exit(2) from None
    except ArtifactError as exc:
        typer.echo(f"rollback: {exc}", err=True)
        raise typer.Exit(2) from None
    reg.set_current(version)
    typer.echo(f"CURRENT -> {version}")
    if announce:
        from kafka.errors import KafkaError

        try:
            settings = TrainerSettings.from_env()
        except ValueError as exc:
            typer.echo(f"rollback: CURRENT moved, but not announced: bad settings: {exc}",
                       err=True)
            raise typer.Exit(1) from None
        name = model_name or settings.model_name
        try:
            producer = kafka_producer(settings)
            try:
                send_update(producer, info, name)
            finally:
                producer.close(timeout=10)
        except KafkaError as exc:
            typer.echo(
                f"rollback: CURRENT now names {version}, but announcing it on model-updates "
                f"failed ({exc!r}): running scorers keep their version until it is announced "
                "(rerun this with the brokers up) and a restarted scorer loads CURRENT",
                err=True)
            raise typer.Exit(1) from None
        typer.echo(f"announced {version} on model-updates (key {name})")


def bench_drift(
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results here")] = None,
    events: Annotated[int | None, typer.Option(
        min=100, help="synthetic events (default: 20000)")] = None,
    chunks: Annotated[int | None, typer.Option(
        min=2, help="chunks scored then trained on (default: 6)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Online HR@10 on a drifting stream: continuously fine-tuned vs frozen model."""
    from rich.console import Console
    from rich.table import Table

    from recstream.bench.drift import run_drift
    from recstream.bench.jsonio import write_json_atomic

    opts: dict[str, Any] = {"seed": seed, "progress": True}
    if events is not None:
        opts["n_events"] = events
    if chunks is not None:
        opts["n_chunks"] = chunks
    result = run_drift(**opts)
    table = Table(title="online HR@10, prequential (score each chunk, then fine-tune on it)")
    for col in ("chunk", "scored events", "fine-tuned", "frozen", "new items"):
        table.add_column(col, justify="right")
    for row in result["chunks"]:
        table.add_row(str(row["chunk"]), str(row["scored"]), f"{row['hr10_finetuned']:.4f}",
                      f"{row['hr10_frozen']:.4f}", str(row["new_items"]))
    table.add_row("all", str(result["scored_events"]), f"{result['online_hr10_finetuned']:.4f}",
                  f"{result['online_hr10_frozen']:.4f}", "")
    Console().print(table)
    if json_out is not None:
        write_json_atomic(json_out, result)
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Called by ``recstream.cli`` at start-up."""
    app.command("trainer")(trainer)
    models = typer.Typer(no_args_is_help=True, help="The model registry: list, roll back.")
    models.command("list")(models_list)
    models.command("rollback")(models_rollback)
    app.add_typer(models, name="models")
    groups["bench"].command("drift")(bench_drift)
