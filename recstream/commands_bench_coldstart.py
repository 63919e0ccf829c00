"""``recstream bench coldstart``: new items (no training interactions), text vs id-only.

Found by ``recstream.cli`` (``register(app, groups)``). Light at import time:
torch and the trainer are imported inside the command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def bench_coldstart(
    dataset: Annotated[str, typer.Option(help="data set with item text (ml-100k)")],
    json_out: Annotated[Path, typer.Option("--json", help="write the results here")],
    data_root: Annotated[Path, typer.Option(help="folder holding <dataset>/")] = Path("../shared/data"),
    fraction: Annotated[float, typer.Option(help="share of catalogue items made cold")] = 0.1,
    seed: Annotated[int, typer.Option(help="cold-item sample, training and tie-break seed")] = 0,
    budget_s: Annotated[float | None, typer.Option(
        help="training seconds per model (default: to early stop)")] = None,
    max_epochs: Annotated[int, typer.Option(help="epoch cap per model")] = 200,
    patience: Annotated[int, typer.Option(help="epochs without a better valid NDCG@10")] = 10,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Hide a share of items from training; HR/NDCG when they are the target, text vs ids."""
    import torch

    n = threads or int(os.environ.get("RECSTREAM_TORCH_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    from recstream.bench.coldstart import ColdStartOptions, run_coldstart
    from recstream.bench.quality import BenchError

    opts = ColdStartOptions(dataset=dataset, data_root=data_root, json_out=json_out,
                            fraction=fraction, seed=seed, budget_s=budget_s,
                            max_epochs=max_epochs, patience=patience, device=device,
                            progress=progress)
    try:
        run_coldstart(opts)
    except BenchError as exc:
        typer.echo(f"bench coldstart: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Called by ``recstream.cli`` at start-up."""
    groups["bench"].command("coldstart")(bench_coldstart)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the 'recstream' command")
