"""Child recstream processes with a log file each, stopped politely then firmly.

Used by the demo, the benchmarks and the integration tests, which all run the
real commands (``python -m recstream.cli worker``) rather than in-process
stand-ins. :class:`Child` is the one wrapper around a child process;
:class:`WorkerProcess` is a stream worker on it, with its metrics port. Every
wait polls with a deadline (never a bare sleep): the tests run on loaded
two-core machines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from recstream import metrics_scrape

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str) -> int:
    """The HTTP status of ``GET 127.0.0.1:port/path`` (an error status included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def is_ready(port: int) -> bool:
    """Whether ``127.0.0.1:port/readyz`` answers 200 (False while nothing listens)."""
    try:
        return http_status(port, "/readyz") == 200
    except OSError:
        return False


def _polls(
    condition: Callable[[], bool], timeout_s: float, what: str, child: Child | None
) -> Iterator[float]:
    """Yield the seconds waited so far while ``condition()`` is false; raise past
    ``timeout_s`` (or when ``child`` exited). The caller sleeps between yields."""
    start = time.monotonic()
    while not condition():
        if child is not None:
            child.check_alive()
        if time.monotonic() - start > timeout_s:
            tail = "" if child is None else f"\n{child.describe_log()}"
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s{tail}")
        yield time.monotonic() - start


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    child: Child | None = None,
) -> float:
    """Poll until ``condition()``; return the seconds it took."""
    start = time.monotonic()
    for _ in _polls(condition, timeout_s, what, child):
        time.sleep(interval_s)
    return time.monotonic() - start


async def wait_for_async(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    child: Child | None = None,
    interval_s: float = 0.05,
) -> float:
    """:func:`wait_for` inside an event loop (whose tasks fill what ``condition`` reads)."""
    start = time.monotonic()
    for _ in _polls(condition, timeout_s, what, child):
        await asyncio.sleep(interval_s)
    return time.monotonic() - start


class ChildFailed(RuntimeError):
    """A child exited early or did not become ready; the message carries its log tail."""


def recstream_command(*args: str) -> list[str]:
    """The command line of a recstream subcommand run with this interpreter."""
    return [sys.executable, "-m", "recstream.cli", *args]


class Child:
    """One child process, its output in ``log_path``.

    ``own_session``: a session of its own, so that a Ctrl-C in the terminal
    reaches only the parent, which then stops its children in order.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        own_session: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def check_alive(self) -> None:
        rc = self.returncode
        if rc is not None:
            raise ChildFailed(f"{self.name} exited with code {rc}\n{self.describe_log()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def describe_log(self, lines: int = 40) -> str:
        tail = self.log_tail(lines)
        indented = "\n".join(f"    {line}" for line in tail.splitlines())
        return f"--- last lines of {self.log_path} ---\n{indented}"

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: A worker's counters of events it is done with (besides the dead-lettered).
DONE_METRICS = (
    "recstream_worker_events_applied_total",
    "recstream_worker_events_duplicate_total",
)


class WorkerFailed(AssertionError):
    """A :class:`WorkerProcess` exited early, or not with 0 on SIGTERM."""


class WorkerProcess:
    """``python -m recstream.stream.worker`` with a metrics port, started and stopped
    by a test or a benchmark: a :class:`Child`, plus the worker's metrics and a
    ``terminate`` that waits for a clean exit."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, metrics_port: int | None = None
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        # In the parent's session, as a test's or a benchmark's worker always was.
        self.child = Child(
            "worker",
            [sys.executable, "-m", "recstream.stream.worker"],
            {**env, "RECSTREAM_METRICS_PORT": str(self.metrics_port)},
            log_path,
            own_session=False,
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    def start(self) -> WorkerProcess:
        self.child.start()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return self.child.log_tail(lines)

    def returncode(self) -> int | None:
        return self.child.returncode

    def check_alive(self) -> None:
        if not self.alive:
            raise WorkerFailed(f"worker exited with {self.returncode()}:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Samples by name (labels folded into the name, ``name{k="v"}``); {} if not serving."""
        samples = metrics_scrape.fetch(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return {} if samples is None else metrics_scrape.flat(samples)

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def events_done(self) -> float:
        """Events the worker is done with: applied, dropped as duplicates, or dead-lettered."""
        m = self.metrics()
        dlq = sum(v for k, v in m.items() if k.startswith("recstream_worker_events_dlq_total"))
        return sum(m.get(name, 0.0) for name in DONE_METRICS) + dlq

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        def ready() -> bool:
            self.check_alive()
            return self.metric("recstream_worker_ready") == 1.0

        return wait_for(ready, timeout_s, f"worker ready\n{self.log_tail()}")

    def wait_metric(
        self, name: str, at_least: float, timeout_s: float = 60.0, interval_s: float = 0.1
    ) -> float:
        def reached() -> bool:
            self.check_alive()
            return self.metric(name) >= at_least

        return wait_for(reached, timeout_s, f"{name} >= {at_least}", interval_s)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        code = self.child.wait(timeout_s)
        if code is None:
            raise TimeoutError(f"worker still running after {timeout_s}s\n{self.log_tail()}")
        return code

    def terminate(self, timeout_s: float = 30.0) -> float:
        """SIGTERM, wait; the worker must exit 0. Returns the seconds it took."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout_s)
        if rc != 0:
            raise WorkerFailed(f"worker exited with {rc} on SIGTERM:\n{self.log_tail()}")
        return time.monotonic() - start

    def kill(self) -> None:
        self.child.kill()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def worker_env(base: Mapping[str, str], state_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(base)
    env["RECSTREAM_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def stop_all(children: Iterable[Child], timeout_s: float = 20.0) -> dict[str, int | None]:
    """SIGTERM every child at once, wait up to ``timeout_s`` in total, then SIGKILL the rest."""
    children = list(children)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int | None] = {}
    for child in children:
        codes[child.name] = child.wait(deadline - time.monotonic())
        if codes[child.name] is None:
            child.kill()
            codes[child.name] = child.returncode
    return codes


def child_env(base: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


#: TLS/SASL settings meant for a production cluster (schemas.settings.KafkaSettings).
SECURITY_ENV = (
    "RECSTREAM_KAFKA_SECURITY_PROTOCOL",
    "RECSTREAM_KAFKA_SASL_MECHANISM",
    "RECSTREAM_KAFKA_SASL_USERNAME",
    "RECSTREAM_KAFKA_SASL_PASSWORD",
    "RECSTREAM_KAFKA_SSL_CAFILE",
    "RECSTREAM_KAFKA_SSL_CERTFILE",
    "RECSTREAM_KAFKA_SSL_KEYFILE",
)


#: Settings that name one process of a deployment: children started together
#: (two workers of the demo, say) must not all inherit one from the shell.
PER_PROCESS_ENV = ("RECSTREAM_GROUP_INSTANCE_ID",)


def embedded_broker_env(
    bootstrap: str,
    base: Mapping[str, str] | None = None,
    *,
    fresh_state: Path | None = None,
    **overrides: str,
) -> dict[str, str]:
    """Environment for a child that talks to the embedded broker (demo, benchmarks).

    The embedded broker listens in plain text: a shell's TLS/SASL settings for
    a real cluster must not leak into children pointed at it. Nor must a shell's
    static group-membership name (``PER_PROCESS_ENV``), unless given as an override:
    children sharing one would fence each other out of their groups.

    ``fresh_state`` becomes ``RECSTREAM_STATE_DIR``, emptied now
    (:func:`fresh_state_dir`): the broker is new, so state from an earlier run
    in the same folder cannot be used. Build the environment once per broker;
    children restarted on it reuse that environment and keep their state.
    """
    if fresh_state is not None:
        overrides["RECSTREAM_STATE_DIR"] = str(fresh_state_dir(fresh_state))
    env = child_env(base, **overrides)
    for name in SECURITY_ENV:
        env.pop(name, None)
    for name in PER_PROCESS_ENV:
        if name not in overrides:
            env.pop(name, None)
    env["RECSTREAM_KAFKA_BOOTSTRAP"] = bootstrap
    env["RECSTREAM_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    return env


def fresh_state_dir(path: Path) -> Path:
    """``path`` as the worker state folder of a run against a new embedded broker.

    The embedded broker keeps nothing across restarts. RocksDB state left in a
    reused run folder records changelog offsets the new broker never had, and
    Faust then refuses to start (``ConsistencyError: The persisted offset ... is
    higher than the last offset in that topic``). So a run that starts its own
    broker starts its worker from an empty folder: stale state goes first.
    """
    if path.exists():
        log.info("removing worker state %s left by an earlier run (the broker is new)", path)
        shutil.rmtree(path)
    return path
