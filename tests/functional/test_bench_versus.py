"""``recstream bench versus-cooccurrence`` end to end on a small stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recstream.bench.versus_cooccurrence import VersusOptions, repeat_share, run_versus

pytestmark = pytest.mark.slow


def test_repeat_share_counts_items_the_user_already_had() -> None:
    assert repeat_share([("u", "a"), ("u", "a"), ("v", "a"), ("u", "b")]) == 0.25


def test_versus_ranks_both_models_on_the_same_new_item_cases(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    report = run_versus(VersusOptions(json_out=out, events=3000, users=150, items=120,
                                      max_epochs=2, patience=1,
                                      shape={"taste": 0.8}))  # fmt: skip
    assert json.loads(out.read_text()) == report and report["git_commit"]
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"cooccurrence", "ours", "ours-no-text"}
    assert 0 < report["cases"] < report["all_cases"] <= report["users"]
    assert all(r["users"] == report["cases"] for r in rows.values())
    assert rows["cooccurrence"]["hr@10"] > 0  # it learnt something from the events
    assert 0 < report["repeat_share"] < 1
    assert report["stream_shape"]["taste"] == 0.8 and report["stream_shape"]["related_alike"] == 0


def test_shape_options_name_a_field_of_the_stream() -> None:
    import typer

    from recstream.commands_bench_versus import _shape

    assert _shape(["taste=0.8", "drift=0.3"]) == {"taste": 0.8, "drift": 0.3}
    with pytest.raises(typer.BadParameter, match="tastes=0.8"):
        _shape(["tastes=0.8"])
