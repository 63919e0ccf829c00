"""Every measured-result file the README and bench/RESULTS.md cite is in bench/results/.

A figure is only as honest as the JSON behind it: a renamed or uncommitted result
file would leave the docs quoting a number nobody can check.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "bench/RESULTS.md")
#: `bench/results/NAME.json`, or `…-NAME.json` (the docs' short form after a first
#: full path); `*` and `{a,b}` as in a shell.
CITED = re.compile(r"`((?:bench/results/|…-)[^`\s]+\.(?:json|txt))`")


def _patterns(cited: str) -> list[str]:
    parts = re.split(r"\{([^}]*)\}", cited.replace("…-", "bench/results/*-"))
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_the_citation_patterns_expand_like_a_shell() -> None:
    assert _patterns("…-scorer-{old,new}-*.json") == [
        "bench/results/*-scorer-old-*.json", "bench/results/*-scorer-new-*.json"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_result_file_exists(doc: str) -> None:
    cited = CITED.findall((ROOT / doc).read_text())
    assert cited, f"{doc} cites no result file: has the citation form changed?"
    missing = [(c, p) for c in cited for p in _patterns(c) if not list(ROOT.glob(p))]
    assert not missing, f"{doc} cites result files that are not in bench/results: {missing}"
