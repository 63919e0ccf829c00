"""recstream.processes: the state folder of a run against a new embedded broker."""

from __future__ import annotations

from pathlib import Path

from recstream.processes import embedded_broker_env, fresh_state_dir


def test_fresh_state_dir_removes_what_an_earlier_run_left(tmp_path: Path) -> None:
    state = tmp_path / "run" / "state"
    (state / "tables").mkdir(parents=True)
    (state / "tables" / "user_sequences-0.db").write_bytes(b"old")
    keep = tmp_path / "run" / "worker.log"
    keep.write_text("kept")
    assert fresh_state_dir(state) == state
    assert not state.exists()
    assert keep.read_text() == "kept"  # only the state folder goes


def test_fresh_state_dir_of_a_new_run_is_left_to_the_worker(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert fresh_state_dir(state) == state and not state.exists()


def test_embedded_broker_env_empties_the_state_folder_it_names(tmp_path: Path) -> None:
    # The demo's and the benchmarks' children get their state folder this way.
    state = tmp_path / "state"
    (state / "old").mkdir(parents=True)
    env = embedded_broker_env("127.0.0.1:9", base={}, fresh_state=state, RECSTREAM_PARTITIONS="2")
    assert env["RECSTREAM_STATE_DIR"] == str(state) and not state.exists()
    assert env["RECSTREAM_PARTITIONS"] == "2"
    # Without it, the environment names no state folder and nothing is removed.
    (state / "kept").mkdir(parents=True)
    assert "RECSTREAM_STATE_DIR" not in embedded_broker_env("127.0.0.1:9", base={})
    assert (state / "kept").exists()
