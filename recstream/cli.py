"""The ``recstream`` command line: one subcommand per process, plus the demo.

Adding commands without touching this file: create ``recstream/commands_<name>.py``
with ``register(app, groups)``; it is found and called at start-up. ``groups``
holds the command groups (``bench``, ``schemas``) to add subcommands to, e.g.
``groups["bench"].command("quality")(quality)``. Keep such modules light at
import time (import torch and friends inside the command functions) so that
``recstream --help`` and the worker image stay fast and torch-free.

Settings come from the environment inside each command, never at import time.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, TypeVar

import typer

import recstream
from recstream.cli_options import EngineOption

log = logging.getLogger("recstream.cli")
T = TypeVar("T")

PLUGIN_PREFIX = "commands_"
GROUP_HELP: Mapping[str, str] = {
    "schemas": "Message schemas (JSON Schema export).",
    "bench": "Benchmarks that print a table and write JSON.",
}


def _configure_logging(
    level: Annotated[
        str, typer.Option("--log-level", envvar="RECSTREAM_LOG_LEVEL", help="DEBUG, INFO, WARNING")
    ] = "INFO",
) -> None:
    """Streaming real-time recommender: Kafka in, fresh top-K out."""
    if level.upper() not in logging.getLevelNamesMapping():
        raise typer.BadParameter(
            f"{level!r} is no log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            param_hint="--log-level / RECSTREAM_LOG_LEVEL",
        )
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def broker(
    engine: EngineOption = "auto",
    data_dir: Annotated[
        Path, typer.Option(help="Kafka's data (kept across restarts): <data-dir>/kafka")
    ] = Path("broker-data"),
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="listen port on the loopback interface")
    ] = 9092,
    host: Annotated[str, typer.Option(help="address to listen on and advertise")] = "127.0.0.1",
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="partitions per topic [default: RECSTREAM_PARTITIONS or 4]"),
    ] = None,
    log_file: Annotated[Path | None, typer.Option("--log", help="broker log file")] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            envvar="RECSTREAM_METRICS_PORT", min=0, max=65535,
            help="serve /metrics, /healthz, /readyz on this port (0: none)",
        ),
    ] = 0,
    fetch_only: Annotated[
        bool, typer.Option("--fetch-only", help="fetch Kafka's jars (once, with Maven) and exit")
    ] = False,
) -> None:
    """Run a broker with every topic in the foreground until SIGTERM or Ctrl-C."""
    from prometheus_client import CollectorRegistry, Gauge

    from recstream.broker import BrokerError, make_broker
    from recstream.schemas.probes import ProbePortError, ProbeServer
    from recstream.schemas.settings import KafkaSettings

    if fetch_only:
        _fetch_kafka()
        return
    if partitions is None:
        partitions = _settings("broker", KafkaSettings.from_env).partitions
    _check_port_free(host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        b = make_broker(engine, data_dir, port=port, host=host, partitions=partitions,
                        log_path=log_file)
    except BrokerError as exc:
        typer.echo(f"broker: {exc}", err=True)
        raise typer.Exit(2) from None
    registry = CollectorRegistry()
    up = Gauge("recstream_broker_up", "1 while the broker process runs", registry=registry)

    def running() -> bool:
        return b.proc is not None and b.proc.poll() is None

    try:
        probes = (
            ProbeServer(registry, metrics_port, live=running, ready=running)
            if metrics_port else None
        )
    except ProbePortError as exc:
        typer.echo(f"broker: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        b.start()
    except BrokerError as exc:
        typer.echo(f"broker: {exc}", err=True)
        raise typer.Exit(1) from None
    up.set(1)
    try:
        typer.echo(f"broker ({b.engine}) serving: RECSTREAM_KAFKA_BOOTSTRAP={b.bootstrap}",
                   err=False)
        sys.stdout.flush()
        while not stop.wait(0.5):
            if not running():
                up.set(0)
                typer.echo(f"broker: {b.engine} exited unexpectedly", err=True)
                raise typer.Exit(1)
    finally:
        b.stop()
        if probes is not None:
            probes.close()
    typer.echo("broker stopped")


def _fetch_kafka() -> None:
    from recstream.broker import BrokerError
    from recstream.kafka_broker import KAFKA_VERSION, check_java, kafka_libs

    try:
        check_java()
        libs = kafka_libs()
    except BrokerError as exc:
        typer.echo(f"broker: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Apache Kafka {KAFKA_VERSION}: {libs}")


def _check_port_free(host: str, port: int) -> None:
    # Our broker would fail to bind, but a Kafka already on the port would answer
    # our readiness probe first: check up front for a clear message.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            typer.echo(f"broker: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None


def worker() -> None:
    """Run a stream worker: events in, per-user sequences, DLQ, score requests out."""
    try:
        from recstream.stream.worker import main
    except ModuleNotFoundError as exc:
        if exc.name not in ("recstream.stream.worker", "recstream.stream"):
            raise
        typer.echo("worker: recstream.stream.worker is not available in this build", err=True)
        raise typer.Exit(2) from None
    main(prog="worker")  # as `python -m recstream.stream.worker`: one line and a status


def scorer() -> None:
    """Run a scorer: score requests in, top-K recommendations out."""
    from aiokafka.errors import KafkaConnectionError

    from recstream.inference.recommender import ModelLoadError
    from recstream.inference.service import ScorerSettings, run_scorer
    from recstream.schemas.probes import ProbePortError

    settings = _settings("scorer", ScorerSettings.from_env)
    try:
        run_scorer(settings)
    except ModelLoadError as exc:
        typer.echo(f"scorer: RECSTREAM_MODEL_DIR: {exc}", err=True)
        raise typer.Exit(2) from None
    except ProbePortError as exc:
        typer.echo(f"scorer: {exc}", err=True)
        raise typer.Exit(2) from None
    except KafkaConnectionError as exc:  # no broker answered: not a usage error
        typer.echo(f"scorer: no broker at {settings.kafka.bootstrap} answered ({exc}); check "
                   "RECSTREAM_KAFKA_BOOTSTRAP and that the brokers are up", err=True)
        raise typer.Exit(1) from None


def _settings(process: str, from_env: Callable[[], T]) -> T:
    """Read a process's settings from the environment; a bad value is a usage error."""
    try:
        return from_env()
    except ValueError as exc:
        typer.echo(f"{process}: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None


def demo(
    engine: EngineOption = "auto",
    duration: Annotated[
        float, typer.Option(help="seconds of replay once the pipeline is ready (room for the "
                            "first Transformer version and at least one more)")
    ] = 240.0,
    rate: Annotated[float, typer.Option(help="events per second")] = 150.0,
    data: Annotated[
        Path | None,
        typer.Option(help="MovieLens atomic files (*.inter, *.item) instead of synthetic"),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary here")] = None,
    users: Annotated[int, typer.Option(help="synthetic users")] = 2000,
    items: Annotated[int, typer.Option(help="synthetic catalogue size")] = 1000,
    seed: Annotated[int, typer.Option(help="synthetic stream seed")] = 7,
    malformed: Annotated[int, typer.Option(help="malformed events to inject (DLQ)")] = 6,
    run_dir: Annotated[
        Path | None, typer.Option(help="logs and state [default: ./state/demo-<time>]")
    ] = None,
    startup_timeout: Annotated[
        float, typer.Option(help="seconds to wait for the first recommendation")
    ] = 180.0,
    dashboard_port: Annotated[
        int, typer.Option(min=0, max=65535,
                          help="port of the live page (taken if free, else any; 0: any)")
    ] = 8050,
    trainer: Annotated[
        bool, typer.Option(help="run the side trainer; the scorer hot-swaps its versions")
    ] = True,
) -> None:
    """Start broker, worker, scorer, trainer and dashboard; replay a stream; show a summary."""
    from recstream.demo import DemoError, DemoOptions, run_demo

    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        # The live line and the tables are the demo's output; client chatter is not.
        for name in ("kafka", "aiokafka", "recstream.broker", "recstream.kafka_broker"):
            logging.getLogger(name).setLevel(logging.WARNING)

    try:
        opts = DemoOptions(
            duration_s=duration,
            rate=rate,
            data=data,
            json_out=json_out,
            users=users,
            items=items,
            seed=seed,
            malformed=malformed,
            run_dir=run_dir,
            startup_timeout_s=startup_timeout,
            dashboard_port=dashboard_port,
            engine=engine,
            trainer=trainer,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        run_demo(opts)
    except DemoError as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("demo interrupted; children stopped", err=True)
        raise typer.Exit(130) from None


def schemas_export(
    directory: Annotated[Path | None, typer.Argument(help="[default: schemas/json]")] = None,
) -> None:
    """Write the JSON Schema of every message type."""
    from recstream.schemas.jsonschema import SCHEMA_DIR, write_all

    for path in write_all(directory or SCHEMA_DIR):
        typer.echo(str(path))


def _benchmarks_stop_children_on_sigterm() -> None:
    # A benchmark stops its broker and children in `finally` blocks, which Ctrl-C
    # (KeyboardInterrupt) runs but SIGTERM's default action skips: `timeout` or a
    # CI job's cancel left the broker, worker, scorer and trainer running.
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _register_plugins(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    for info in sorted(pkgutil.iter_modules(recstream.__path__), key=lambda m: m.name):
        if not info.name.startswith(PLUGIN_PREFIX):
            continue
        name = f"recstream.{info.name}"
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # One broken optional module must not take down every other command.
            print(f"recstream: commands from {name} unavailable: {exc}", file=sys.stderr)
            continue
        module.register(app, groups)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="recstream",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_configure_logging)
    for command in (broker, worker, scorer, demo):
        app.command()(command)
    groups = {
        name: typer.Typer(no_args_is_help=True, help=text) for name, text in GROUP_HELP.items()
    }
    groups["schemas"].command("export")(schemas_export)
    groups["bench"].callback()(_benchmarks_stop_children_on_sigterm)
    _register_plugins(app, groups)
    for name, group in groups.items():
        if group.registered_commands or group.registered_groups:
            app.add_typer(group, name=name)
    return app


app = build_app()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
