"""One process per state folder: an advisory lock held for the process's life.

Two workers (or two trainers) on one ``RECSTREAM_STATE_DIR`` would share RocksDB
folders that only one process may open: a second worker retried "DB for
partition 0 is locked" every second, forever, and a second trainer died with
RocksDB's "IO error: While lock file". Here, in ``schemas`` because both the
stream worker and the trainer take it, the second process is refused at once,
naming the holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import TextIO

LOCK_FILE = ".recstream.lock"


class StateDirError(RuntimeError):
    """The state folder cannot be used: not a folder, not writable, or held."""


class StateInUseError(StateDirError):
    """Another live process holds the state folder."""


def lock_state_dir(path: Path, owner: str) -> TextIO:
    """Lock ``path`` (created if missing) for this process, or raise
    :class:`StateInUseError`. Keep the returned file open while the state is in
    use: the lock goes with it (and with the process, however it ends)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK_FILE, "a+")  # noqa: SIM115 - held for the process's life
    except OSError as exc:  # a file in the way, no permission, a read-only volume
        raise StateDirError(
            f"cannot use {path} as the {owner}'s state folder (RECSTREAM_STATE_DIR): "
            f"{exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "a process that did not say who it is"
        handle.close()
        raise StateInUseError(
            f"{path} is in use by another {owner} ({holder}); give each {owner} a "
            "RECSTREAM_STATE_DIR of its own"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle
