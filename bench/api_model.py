"""The model ``recstream bench api`` serves: trained briefly on the benchmark's own
synthetic stream with its item titles, so that its text tower can rank an item
that arrives later on ``items`` (``new_item_s``). Quality is not the point here;
a model that knows the catalogue's text is.
"""

from __future__ import annotations

from pathlib import Path

from recstream.synthetic import SyntheticData


def write_atomic(data: SyntheticData, folder: Path) -> Path:
    """RecBole atomic files (``.inter`` and ``.item`` with title and category)."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = folder / "synthetic.inter"
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"{e.user_id}\t{e.item_id}\t{e.ts / 1000:.3f}" for e in data.events]
    inter.write_text("\n".join(rows) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\tcategory:token_seq"]
    items += [f"{i.item_id}\t{i.title}\t{i.category}" for i in data.items.values()]
    inter.with_suffix(".item").write_text("\n".join(items) + "\n")
    return inter


def train_text_model(data: SyntheticData, folder: Path, budget_s: float = 60.0) -> Path:
    """A small time- and text-aware model over ``data`` (with id dropout, so items are
    also ranked by their text alone), in ``folder/model``; returns that folder."""
    from recstream.inference.item_text import default_cache_dir
    from recstream.trainer.pipeline import run_train
    from recstream.trainer.train import TrainConfig

    out = folder / "model"
    cfg = TrainConfig(max_epochs=30, patience=5, time_budget_s=budget_s, progress=False)
    run_train(write_atomic(data, folder), out, {"max_len": 50, "id_dropout": 0.3}, cfg,
              text="on", cache_dir=default_cache_dir(), overwrite=True)  # fmt: skip
    return out
