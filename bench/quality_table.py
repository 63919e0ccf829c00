"""The README's quality table, generated from ``bench quality`` result files.

``python -m recstream.bench.quality_table FILE...`` prints one Markdown table:
per data set, every row of the files in the order given (a model named twice
keeps its first row), with its test NDCG@10 and HR@10 (means over its seeds),
the seeds, its paired difference to that data set's ``ours`` row over the
seeds both ran (mean and standard error, :func:`bench.quality.paired_vs_ours`,
also across files: a seed fixes the split, initialisation and batches), whether
it converged, and the file it comes from. Peer rows get ``ours`` over them
instead (converged peers only). A test holds the README's copy to this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from recstream.bench.quality import PEER_PREFIXES, paired_vs_ours

HEADER = ("| data set | row | NDCG@10 | HR@10 | seeds | row minus ours: NDCG@10 mean, SE "
          "| converged | from |\n|---|---|---|---|---|---|---|---|")


def collect(paths: list[Path]) -> dict[str, list[tuple[dict[str, Any], str]]]:
    """Data set -> its rows (with the file name each came from), first occurrence kept."""
    out: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for path in paths:
        for dataset, result in json.loads(path.read_text()).items():
            rows = out.setdefault(dataset, [])
            for row in result["rows"]:
                if all(row["model"] != r["model"] for r, _ in rows):
                    rows.append((row, path.name))
    return out


def _versus_ours(row: dict[str, Any], ours: dict[str, Any] | None) -> str:
    if ours is None or row is ours or row["model"] == "popularity":
        return ""
    if row["model"].startswith(PEER_PREFIXES):
        if not row.get("converged"):
            return "not converged: no ratio"
        return f"ours / it: {ours['ndcg@10'] / row['ndcg@10']:.2f}"
    paired = paired_vs_ours(row, ours)["ndcg@10"]
    if paired["mean"] is None:
        return ""
    se = f", {paired['se']}" if paired["se"] is not None else ""
    return f"{paired['mean']:+}{se} ({paired['n']} seeds)"


def render(paths: list[Path]) -> str:
    """The Markdown table for ``paths`` (result JSONs of ``bench quality``)."""
    lines = [HEADER]
    for dataset, rows in collect(paths).items():
        ours = next((r for r, _ in rows if r["model"] == "ours"), None)
        for row, name in rows:
            seed_list = row.get("seeds") or [row.get("settings", {}).get("seed", "")]
            seeds = "" if row["model"] == "popularity" else ",".join(map(str, seed_list))
            converged = "" if row["model"] == "popularity" else (
                "yes" if row.get("converged") else "no")
            lines.append(f"| {dataset} | {row['model']} | {row['ndcg@10']} | {row['hr@10']} | "
                         f"{seeds} | {_versus_ours(row, ours)} | {converged} | `{name}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.exit("usage: python -m recstream.bench.quality_table RESULT.json...")
    sys.stdout.write(render([Path(a) for a in args]))


if __name__ == "__main__":
    main()
