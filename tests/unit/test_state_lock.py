"""``schemas.state_lock``: one process per state folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.schemas.state_lock import LOCK_FILE, StateDirError, StateInUseError, lock_state_dir


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = lock_state_dir(state, "worker")  # creates the folder
    assert "pid " in (state / LOCK_FILE).read_text()
    # flock locks belong to the open file, so a second open in this process is refused too.
    with pytest.raises(StateInUseError, match=r"in use by another worker \(pid \d+ on "):
        lock_state_dir(state, "worker")
    first.close()
    lock_state_dir(state, "worker").close()


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    with pytest.raises(StateDirError, match=r"cannot use .*state as the trainer's state folder"):
        lock_state_dir(tmp_path / "state", "trainer")
