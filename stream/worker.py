"""Run the stream worker: ``run_worker(WorkerSettings.from_env())``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust
from faust.exceptions import ConsistencyError
from recstream.schemas.probes import loop_responds
from recstream.schemas.state_lock import StateDirError, lock_state_dir
from recstream.stream import faust_drain, tansu_compat, topic_check
from recstream.stream.app import create_app, widen_producer_buffer
from recstream.stream.metrics import MetricsServer, WorkerMetrics
from recstream.stream.settings import WorkerSettings

log = logging.getLogger(__name__)


class StaleStateError(RuntimeError):
    """The worker's RocksDB state is ahead of the broker's changelog; the message says why."""


def stale_state_message(state_dir: Path, exc: ConsistencyError) -> str:
    """What Faust's refusal means here, and what to do about it."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return (
        f"the table state in {state_dir} is ahead of the broker's changelog "
        f"(ConsistencyError: {first}). If the broker started empty after that state was "
        "written (the embedded broker keeps nothing across restarts), remove the folder or "
        "set RECSTREAM_STATE_DIR to a new one: the worker rebuilds its tables from the "
        "changelog. Against a real cluster it means the changelog topics lost records: "
        "find out why before removing the folder"
    )


def run_worker(settings: WorkerSettings) -> None:
    """Run until SIGTERM/SIGINT (then stop cleanly and return); raise if the worker crashed.

    Raises :class:`stream.topic_check.PartitionCountError` before starting when a
    per-user topic's partition count is not ``settings.kafka.partitions``,
    :class:`schemas.state_lock.StateDirError` when the state folder is unusable or
    another process holds it, and :class:`StaleStateError` when the local state is ahead of
    the changelog.
    """
    logging.basicConfig(level=settings.log_level)  # a no-op where the CLI set logging up
    # The worker id on every line (the CLI's handler too): the logs of several
    # workers are read side by side.
    worker = settings.worker_id.replace("%", "%%")
    line = logging.Formatter(f"[%(asctime)s] %(levelname)s {worker} %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(line)
    # kafka-python (broker detection) logs every connection at INFO.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    held = lock_state_dir(settings.state_dir, "worker")  # before RocksDB opens anything
    try:
        _run(settings)
    finally:
        held.close()


def _run(settings: WorkerSettings) -> None:
    wait_s = settings.broker_wait_s
    active, why = tansu_compat.compat_wanted(
        settings.kafka, detect=lambda kafka: tansu_compat.detect_cluster_id(kafka, wait_s)
    )
    log.info("broker compat %s (%s)", "ON" if active else "off", why)
    # Before anything is read: a topic of another partition count misplaces users.
    topic_check.check_partition_counts(settings.kafka, timeout_s=wait_s)

    metrics = WorkerMetrics()
    metrics.broker_compat.set(1 if active else 0)
    # Faust and mode look the loop up with get_event_loop(): give them a fresh one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server: MetricsServer | None = None
    if settings.metrics_port:
        # /healthz: the loop answers; /readyz: partitions assigned, tables recovered.
        server = metrics.serve(settings.metrics_port, live=loop_responds(loop))
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", settings.metrics_port)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    worker_app = create_app(settings, metrics=metrics)
    worker_app.gaps.install()
    # Faust's fetch loop without four tasks per record (stream.faust_drain),
    # feeding the events agent past the conductor (stream.intake).
    intake = worker_app.intake
    faust_drain.install(worker_app.app, dict.fromkeys(intake.topics, intake.offer))
    widen_producer_buffer(worker_app.app, settings.batch_size)
    if active:
        tansu_compat.install(worker_app.app, settings.kafka, settings.fetch_wait_ms)
    worker = faust.Worker(
        worker_app.app,
        loop=loop,
        loglevel=settings.log_level,
        # Our own logging config above; mode would otherwise replace it.
        override_logging=False,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        # mode turns a crash into SystemExit(1); its reason stays on the worker.
        crash = worker.crash_reason
        if isinstance(crash, ConsistencyError):
            raise StaleStateError(stale_state_message(settings.state_dir, crash)) from crash
        if exc.code not in (0, None):
            raise
    finally:
        if server is not None:
            server.close()


def main() -> None:
    try:
        settings = WorkerSettings.from_env()
    except ValueError as exc:
        print(f"recstream worker: bad settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run_worker(settings)
    except (topic_check.PartitionCountError, StaleStateError, StateDirError) as exc:
        print(f"recstream worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except tansu_compat.BrokerDetectionError as exc:
        print(f"recstream worker: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
