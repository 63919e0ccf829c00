"""The generated quality table: rows in file order, first occurrence kept, pairs across
files, peers compared only when converged."""

from __future__ import annotations

import json
from pathlib import Path

from recstream.bench.quality_table import render


def _row(model: str, ndcg: float, seeds: list[int] | None = None, **extra: object) -> dict:
    row: dict = {"model": model, "ndcg@10": ndcg, "hr@10": 2 * ndcg, "converged": True, **extra}
    if seeds is not None:
        row["seeds"] = seeds
        row["per_seed"] = [{"seed": s, "ndcg@10": ndcg + s / 100, "hr@10": 2 * ndcg}
                           for s in seeds]
    return row


def test_rows_pair_across_files_and_unconverged_peers_get_no_ratio(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"d": {"rows": [_row("ours", 0.2, [0, 1])]}}))
    second.write_text(json.dumps({"d": {"rows": [
        _row("ours", 0.9, [0, 1]),  # a second "ours": the first file's is kept
        _row("no-time", 0.1, [0, 1]),
        _row("rectools-sasrec", 0.1, settings={"seed": 0}),
        _row("recbole-bert4rec", 0.05, converged=False),
    ]}}))
    lines = render([first, second]).splitlines()[2:]
    assert [line.split(" | ")[1] for line in lines] == [
        "ours", "no-time", "rectools-sasrec", "recbole-bert4rec"]
    assert "| 0.2 |" in lines[0] and "`a.json`" in lines[0]
    assert "-0.1, 0.0 (2 seeds)" in lines[1]  # per seed: 0.1 - 0.2 and 0.11 - 0.21
    assert "ours / it: 2.00" in lines[2] and "| 0 |" in lines[2]
    assert "not converged: no ratio" in lines[3] and "| no |" in lines[3]
