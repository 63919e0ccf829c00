"""Child recstream processes with a log file each, stopped politely then firmly.

Used by the demo and the integration tests, which both run the real commands
(``python -m recstream.cli worker``) rather than in-process stand-ins.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ChildFailed(RuntimeError):
    """A child exited early or did not become ready; the message carries its log tail."""


def recstream_command(*args: str) -> list[str]:
    """The command line of a recstream subcommand run with this interpreter."""
    return [sys.executable, "-m", "recstream.cli", *args]


class Child:
    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only the
            # parent, which then stops its children in order.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
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
