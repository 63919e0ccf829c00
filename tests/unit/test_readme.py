"""The README's two commands exist and CI runs the test one (the demo itself is
exercised by tests/integration/test_demo.py, which runs what `make demo` runs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_shows_exactly_two_setup_commands() -> None:
    assert _quick_start_commands() == ["make demo", "make test"]


def test_make_targets_exist_and_demo_runs_the_cli_demo() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, re.M))
    assert {"demo", "test", "venv"} <= targets
    assert re.search(r"^demo:.*\n\t\$\(VENV\)/bin/recstream demo", makefile, re.M)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
