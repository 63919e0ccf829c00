"""Run the stream worker: :func:`main` for both ``python -m recstream.stream.worker``
and ``recstream worker``; :func:`run_worker` to run it from settings."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust
from faust.exceptions import ConsistencyError
from recstream.schemas.probes import ProbePortError
from recstream.schemas.state_lock import StateDirError, lock_state_dir
from recstream.stream import faust_internals, kafka_admin, tansu_compat
from recstream.stream.app import create_app, internal_topics
from recstream.stream.settings import WorkerSettings

log = logging.getLogger(__name__)


class StaleStateError(RuntimeError):
    """The worker's RocksDB state is ahead of the broker's changelog; the message says why."""


#: Start-up errors, reported as one line; the exit status is 2 (fix the settings
#: or the environment) except for brokers that never answered (1).
START_ERRORS = (
    kafka_admin.PartitionCountError, StaleStateError, ProbePortError, StateDirError,
    faust_internals.FaustVersionError, tansu_compat.BrokerDetectionError,
)  # fmt: skip


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
    """Run until SIGTERM/SIGINT (then stop cleanly and return); raise one of
    :data:`START_ERRORS` when it cannot start, anything else if it crashed."""
    logging.basicConfig(level=settings.log_level)  # a no-op where the CLI set logging up
    # The worker id on every line: the logs of several workers are read side by side.
    worker = settings.worker_id.replace("%", "%%")
    line = logging.Formatter(f"[%(asctime)s] %(levelname)s {worker} %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(line)
    # kafka-python (broker detection) logs every connection at INFO.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    faust_internals.check_version()
    held = lock_state_dir(settings.state_dir, "worker")  # before RocksDB opens anything
    try:
        _run(settings)
    finally:
        held.close()


def _run(settings: WorkerSettings) -> None:
    wait_s = settings.broker_wait_s
    tansu, why = tansu_compat.compat_wanted(
        settings.kafka, detect=lambda kafka: tansu_compat.detect_cluster_id(kafka, wait_s)
    )
    log.info("broker compat %s (%s)", "ON" if tansu else "off", why)
    # Before anything is read: a topic of another partition count misplaces users.
    replication = kafka_admin.check_partition_counts(settings.kafka, timeout_s=wait_s)
    # Before the first rebalance: one that misses a new changelog kills the first write.
    try:
        kafka_admin.ensure_topics(settings.kafka, internal_topics(settings.app_id),
                                  replication or 1, timeout_s=wait_s)  # fmt: skip
    except kafka_admin.BrokerUnreachable as exc:
        log.warning("internal topics not made ready; Faust creates them: %s", exc)
    # Faust and mode look the loop up with get_event_loop(): give them a fresh one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker_app = create_app(settings, tansu=tansu, replication_factor=replication or 1)
    worker = faust.Worker(
        worker_app.app, loop=loop, loglevel=settings.log_level,
        override_logging=False, redirect_stdouts=False,  # keep the logging set up above
    )  # fmt: skip
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
        worker_app.close()


def main(prog: str = "recstream worker") -> None:
    """Read the settings from the environment and run; a start-up error is one line
    on stderr, prefixed with ``prog``, and an exit status."""
    try:
        settings = WorkerSettings.from_env()
    except ValueError as exc:
        print(f"{prog}: bad settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run_worker(settings)
    except START_ERRORS as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(1 if isinstance(exc, tansu_compat.BrokerDetectionError) else 2) from None


if __name__ == "__main__":
    main()
