"""``schemas.state_lock``: one process per state folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.state_lock import LOCK_FILE, StateInUseError, lock_state_dir


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = lock_state_dir(state, "worker")  # creates the folder
    assert "pid " in (state / LOCK_FILE).read_text()
    # flock locks belong to the open file, so a second open in this process is refused too.
    with pytest.raises(StateInUseError, match=r"in use by another worker \(pid \d+ on "):
        lock_state_dir(state, "worker")
    first.close()
    lock_state_dir(state, "worker").close()
