"""Every measured-result file the README and bench/RESULTS.md cite is in bench/results/.

A figure is only as honest as the JSON behind it: a renamed or uncommitted result
file would leave the docs quoting a number nobody can check.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

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


BOTH = "bench/results/2026-12-07-cpu-stream-both-1000-120s-at-cap.json"
RECTOOLS = "bench/results/2026-12-08-cpu-quality-ml100k-rectools-sasrec.json"
SYNTHETIC = "bench/results/2026-12-08-cpu-quality-synthetic-5seeds-time.json"
NEGATIVES = "bench/results/2026-12-08-cpu-beauty-negatives.json"
#: Figures the README quotes from its Kafka table: (JSON file, keys into it, format).
QUOTED = [
    (BOTH, ("engines", engine, key), fmt)
    for engine in ("tansu", "kafka")
    for key, fmt in (("events_per_s", "{:,}"), ("events_per_s_at_cap", "{:,}"),
                     ("cpu_us_per_event_at_cap", "{} µs"), ("p99_ms", "{} ms"))
] + [
    (BOTH, ("engines", engine, "p99_ms_per_minute"), "per minute {}") for engine in ("tansu", "kafka")
] + [
    ("bench/results/2026-12-07-cpu-faults-kafka-cluster.json",
     ("faults", "leader_kill", "recovered_s"), "`recovered_s` {}"),
    ("bench/results/2026-12-07-cpu-faults-kafka-cluster.json",
     ("faults", "leader_kill", "longest_gap_s"), "`longest_gap_s` {}"),
    ("bench/results/2026-12-07-cpu-faults-kafka.json", ("faults", "broker_kill", "lost"),
     "`lost` {} of"),
    ("bench/results/2026-12-07-cpu-stream-kafka-1000-600s.json", ("p99_ms",), "p99 {} ms;"),
    ("bench/results/2026-12-07-cpu-stream-kafka-1000-600s.json", ("p99_slope_ms_per_min",),
     "own slope, {},"),
    ("bench/results/2026-12-07-cpu-soak-kafka-1000-600s-rocksdb32.json",
     ("soak_done_events_per_s",), "kept up ({} events/s"),
    ("bench/results/2026-12-07-cpu-soak-kafka-1000-600s-rocksdb32.json",
     ("rss_slope_mb_per_min_worker_last_half",), "worker {}, scorer"),
    ("bench/results/2026-12-07-cpu-soak-kafka-1000-600s-rocksdb32.json",
     ("rss_slope_mb_per_min_scorer_last_half",), "scorer {} MB/min"),
    ("bench/results/2026-12-07-cpu-soak-kafka-1000-600s.json",
     ("rss_slope_mb_per_min_worker_last_half",), "worker {} MB/min, 80"),
    ("bench/results/2026-12-07-cpu-faults-kafka-wallclock.json",
     ("faults", "broker_kill", "recovered_s"), "`recovered_s` {}"),
    ("bench/results/2026-12-07-cpu-faults-kafka-wallclock.json",
     ("faults", "broker_kill", "longest_gap_s"), "`longest_gap_s` {}"),
    ("bench/results/2026-12-07-cpu-stream-kafka-1000-faust-fetch-wait.json", ("p99_ms",),
     "p99 {:,} ms"),
    ("bench/results/2026-12-07-cpu-stream-kafka-1000-60s-fetch-wait-20.json", ("p99_ms",),
     "{} ms over 60 s"),
    ("bench/results/2026-12-07-cpu-demo.json", ("first_sequence_served_s",), "served {} s after"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json", ("ml-100k", "rows", 1, "ndcg@10"), "NDCG@10 {} for ours"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json", ("ml-100k", "rows", 2, "ndcg@10"), "against {} without time"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json", ("ml-100k", "rows", 2, "paired_vs_ours", "ndcg@10", "mean"), "ours) is {} with"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json", ("ml-100k", "rows", 2, "paired_vs_ours", "ndcg@10", "se"), "error of {}, inside"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json", ("ml-100k", "rows", 1, "per_seed", 0, "ndcg@10"), "run, {} here"),
    ("bench/results/2026-12-07-cpu-quality-ml100k-5seeds.json",
     ("ml-100k", "rows", 1, "per_seed", 0, "ndcg@10"), "seed 0: {} in an earlier run"),
    (RECTOOLS, ("ml-100k", "rows", 2, "ndcg@10"), "test NDCG@10 {} on MovieLens-100K"),
    (RECTOOLS, ("ml-100k", "rows", 2, "best_epoch"), "converged at epoch {} of"),
    (RECTOOLS, ("ml-100k", "rows", 2, "epochs"), "of {}, beside"),
    (RECTOOLS, ("ml-100k", "rows", 1, "ndcg@10"), "ours reached {} in the same run"),
    (RECTOOLS, ("ml-100k", "rows", 1, "per_seed", 0, "ndcg@10"), "here, {} in a third"),
    (RECTOOLS, ("ml-100k", "ours_over_best_peer_ndcg10"), "{} times the peer"),
    (SYNTHETIC, ("synthetic", "rows", 1, "ndcg@10"), "NDCG@10 {} for ours against"),
    (SYNTHETIC, ("synthetic", "rows", 2, "ndcg@10"), "against {} without time (no-time"),
    (SYNTHETIC, ("synthetic", "rows", 2, "paired_vs_ours", "ndcg@10", "mean"),
     "minus ours: {}, standard"),
    (SYNTHETIC, ("synthetic", "rows", 2, "paired_vs_ours", "ndcg@10", "se"), "error {})."),
    (NEGATIVES, ("beauty_negatives", "rows", 0, "ndcg@10"), "negatives gave test NDCG@10 {} (HR@10"),
    (NEGATIVES, ("beauty_negatives", "rows", 0, "hr@10"), "(HR@10 {}) and 4,096"),
    (NEGATIVES, ("beauty_negatives", "rows", 1, "ndcg@10"), "and 4,096 gave {} (HR@10"),
    (NEGATIVES, ("beauty_negatives", "rows", 1, "hr@10"), "(HR@10 {}), an epoch"),
    ("bench/results/2026-12-07-cpu-api-kafka.json", ("p50_ms",), "p50 {} ms, p99"),
    ("bench/results/2026-12-07-cpu-api-kafka.json", ("p99_ms",), "p99 {} ms, no"),
    ("bench/results/2026-12-07-cpu-api-kafka.json", ("baseline_healthz_p99_ms",),
     "at the same rate, p99 {} ms"),
    ("bench/results/2026-12-07-cpu-api-kafka.json", ("retired_violations",),
     "appeared in {} of the"),
    ("bench/results/2026-12-07-cpu-api-kafka.json", ("lists_after_retirement",),
     "of the {:,} lists"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("train_s",), "trained for {} s"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("p50_ms",), "spinning): p50 {} ms,"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("p99_ms",), "p99 {} ms against"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("baseline_healthz_p99_ms",),
     "`GET /healthz` p99 {} ms:"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("new_item_ranked_s",),
     "ranked by the scorer {} s after"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("new_item_s",),
     "list {} s after it"),
    ("bench/results/2026-12-07-cpu-api-kafka-new-item.json", ("lists_after_retirement",),
     "in 0 of {:,} later lists"),
    ("bench/results/2026-12-07-cpu-demo.json", ("by_model", "sequence", "online_hr10"),
     "reach online HR@10 {} against"),
    ("bench/results/2026-12-07-cpu-demo.json", ("by_model", "cooccurrence", "online_hr10"),
     "co-occurrence's {}, a ratio"),
    ("bench/results/2026-12-07-cpu-demo.json", ("hr10_ratio_sequence_vs_cooccurrence",),
     "a ratio of {}:"),
    ("bench/results/2026-12-07-cpu-demo.json", ("by_model", "sequence", "p99_ms"),
     "recommendation is {} ms with the sequence"),
    ("bench/results/2026-12-07-cpu-demo.json", ("by_model", "cooccurrence", "p99_ms"),
     "against {} ms in the co-occurrence phase"),
]


def test_the_quoted_quality_rows_are_the_ones_named() -> None:
    rows = json.loads((ROOT / "bench/results/2026-12-07-cpu-quality-ml100k-5seeds-4rows.json")
                      .read_text())["ml-100k"]["rows"]  # fmt: skip
    assert [r["model"] for r in rows[1:3]] == ["ours", "no-time"]
    assert rows[1]["seeds"] == rows[2]["seeds"] == [0, 1, 2, 3, 4]
    peer = json.loads((ROOT / RECTOOLS).read_text())["ml-100k"]
    assert [r["model"] for r in peer["rows"][1:]] == ["ours", "rectools-sasrec"]
    assert peer["rows"][2]["converged"] is True and peer["best_peer"] == "rectools-sasrec"
    five_seeds = round(rows[1]["ndcg@10"] / peer["rows"][2]["ndcg@10"], 2)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"mean of ours ({rows[1]['ndcg@10']}) is {five_seeds} times the peer" in readme
    negatives = json.loads((ROOT / NEGATIVES).read_text())["beauty_negatives"]["rows"]
    assert [r["negatives"] for r in negatives[:2]] == [1024, 4096]
    assert all(r["converged"] and r["seed"] == 0 for r in negatives)
    synthetic = json.loads((ROOT / SYNTHETIC).read_text())["synthetic"]["rows"]
    assert [r["model"] for r in synthetic[1:]] == ["ours", "no-time"]
    assert synthetic[1]["seeds"] == synthetic[2]["seeds"] == [0, 1, 2, 3, 4]


def test_the_no_text_and_sasrec_rows_are_quoted_paired_with_the_earlier_ours() -> None:
    from recstream.bench.quality import paired_vs_ours

    def rows(name: str) -> list[dict[str, Any]]:
        return json.loads((ROOT / "bench/results" / name).read_text())["ml-100k"]["rows"]

    ours = rows("2026-12-07-cpu-quality-ml100k-5seeds-4rows.json")[1]
    readme = " ".join((ROOT / "README.md").read_text().split())
    later = rows("2026-12-08-cpu-quality-ml100k-5seeds-no-text-sasrec.json")[1:]
    assert [r["model"] for r in later] == ["no-text", "sasrec"]
    for row, name in zip(later, ("without text", "for our SASRec"), strict=True):
        assert row["seeds"] == ours["seeds"] and row["converged"] is True
        paired = paired_vs_ours(row, ours)["ndcg@10"]
        assert (f"{row['ndcg@10']} {name} (ours minus it: {-paired['mean']}, standard error "
                f"{paired['se']})") in readme, (name, paired)


def test_the_quoted_ten_minute_slope_is_that_of_the_whole_minutes() -> None:
    from recstream.bench.soak import slope_per_min

    run = json.loads((ROOT / "bench/results/2026-12-07-cpu-stream-kafka-1000-600s.json").read_text())
    minutes = run["p99_ms_per_minute"][:10]
    slope = slope_per_min([(60.0 * i, p) for i, p in enumerate(minutes)])
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"per minute {', '.join(str(m) for m in minutes)} and 2 stragglers" in readme
    assert f"ten whole minutes {slope:.1f} ms/min" in readme


def _fmt(fmt: str, value: object) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return fmt.format(value)


@pytest.mark.parametrize("path, keys, fmt", QUOTED)
def test_each_quoted_figure_equals_its_json(path: str, keys: tuple[str, ...], fmt: str) -> None:
    value = json.loads((ROOT / path).read_text())
    for key in keys:
        value = value[key]
    readme = (ROOT / "README.md").read_text()
    assert _fmt(fmt, value) in " ".join(readme.split()), (path, keys, value)


def test_the_readme_quality_table_is_what_its_command_generates() -> None:
    from recstream.bench.quality_table import render

    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- quality-table -->\n")[1].split("<!-- /quality-table -->")[0]
    command = " ".join(readme.split("python -m\nrecstream.bench.quality_table ")[1]
                       .split("`")[0].split())  # fmt: skip
    files = [ROOT / f for f in command.split()]
    assert files and all(f.is_file() for f in files), command
    assert table == render(files)
