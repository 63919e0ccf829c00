"""Moved: :mod:`recstream.processes` (``WorkerProcess``, ``wait_for``, ...) and
:mod:`recstream.readback` (``read_table``, ``latest_changelog_states``, ...).

The stream package ships no test harness. This module only keeps the old
import path working for code not yet moved over (``bench/faults.py``,
``recstream/commands_bench_faults.py``); delete it once nothing imports it.
"""

from recstream.processes import WorkerFailed, WorkerProcess, wait_for
from recstream.readback import latest_changelog_states, read_table

__all__ = ["WorkerFailed", "WorkerProcess", "latest_changelog_states", "read_table", "wait_for"]
