"""``recstream train``, ``recstream eval`` and ``recstream bench quality``.

Found by ``recstream.cli`` (``register(app, groups)``). Light at import time:
torch and the trainer are imported inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer


def _threads(threads: int | None) -> None:
    """Torch intra-op threads: the flag, else RECSTREAM_TORCH_THREADS, else torch's default."""
    import torch

    n = threads or int(os.environ.get("RECSTREAM_TORCH_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def train(
    data: Annotated[Path, typer.Option(help=".inter file (RecBole atomic), 'user item' .txt, "
                                       "or a .jsonl event log")],
    out: Annotated[Path, typer.Option(help="version directory to create (written atomically)")],
    max_epochs: Annotated[int, typer.Option(help="upper bound on epochs")] = 200,
    patience: Annotated[int, typer.Option(help="epochs without a better valid NDCG@10")] = 10,
    time_budget: Annotated[float | None, typer.Option(help="stop training after S seconds")] = None,
    max_len: Annotated[int, typer.Option(help="events per sequence (most recent)")] = 200,
    d_model: Annotated[int, typer.Option()] = 64,
    layers: Annotated[int, typer.Option()] = 2,
    heads: Annotated[int, typer.Option()] = 2,
    ffn_mult: Annotated[int, typer.Option(help="FFN width / d_model")] = 1,
    dropout: Annotated[float, typer.Option()] = 0.2,
    id_dropout: Annotated[float, typer.Option(
        help="share of item id rows dropped per training step (with text): better cold-start "
             "items, slightly worse warm ones")] = 0.0,
    lr: Annotated[float, typer.Option()] = 2e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.1,
    batch_size: Annotated[int, typer.Option()] = 128,
    loss: Annotated[str, typer.Option(help="'full' softmax or 'sampled' (big catalogues)")] = "full",
    negatives: Annotated[int, typer.Option(help="negatives for --loss sampled")] = 4096,
    pretrain_epochs: Annotated[int, typer.Option(
        help="epochs of masked-item pre-training before next-item training")] = 0,
    mask_prob: Annotated[float, typer.Option(
        help="share of events hidden per sequence in pre-training")] = 0.2,
    text: Annotated[str, typer.Option(help="item text embeddings: auto, on, off")] = "auto",
    time: Annotated[bool, typer.Option("--time/--no-time", help="time-gap and age inputs")] = True,
    age_bias_layers: Annotated[str, typer.Option(
        help="attention layers with the time-age bias: last, or all (adds a CPU "
             "scorer's [B, L, L] work)")] = "last",
    event_type: Annotated[bool, typer.Option("--event-type/--no-event-type")] = True,
    fusion: Annotated[bool, typer.Option("--fusion/--no-fusion",
                                         help="gated long/short-term fusion")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda (training only; the saved "
                                        "model is device-free)")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary here")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train the sequence model (early stopping on validation), test once, publish a version dir."""
    if out.exists() and not overwrite:  # before the training run, not after it
        typer.echo(f"train: {out} exists; choose a new version directory or pass --overwrite",
                   err=True)
        raise typer.Exit(2)
    _threads(threads)
    from recstream.inference.item_text import default_cache_dir
    from recstream.trainer.pipeline import run_train
    from recstream.trainer.train import TrainConfig

    cfg = TrainConfig(lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                      max_epochs=max_epochs, patience=patience, time_budget_s=time_budget,
                      seed=seed, progress=progress, device=device,
                      pretrain_epochs=pretrain_epochs, mask_prob=mask_prob)
    try:
        cfg.validate()  # before the data is read, not after
    except ValueError as exc:
        typer.echo(f"train: {exc}", err=True)
        raise typer.Exit(2) from None
    overrides = dict(max_len=max_len, d_model=d_model, n_layers=layers, n_heads=heads,
                     ffn_mult=ffn_mult, dropout=dropout, id_dropout=id_dropout, loss=loss,
                     n_negatives=negatives, masked_pretraining=pretrain_epochs > 0,
                     use_time=time, use_event_type=event_type, use_fusion=fusion,
                     age_bias_layers=age_bias_layers)
    try:
        summary = run_train(data, out, overrides, cfg, text=text,
                            cache_dir=default_cache_dir(), overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        typer.echo(f"train: {exc}", err=True)
        raise typer.Exit(2) from None
    _write_json(json_out, summary)
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


def eval_(
    model: Annotated[Path, typer.Option(help="model version directory")],
    data: Annotated[Path, typer.Option(help="data to split and evaluate on (same protocol)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics here")] = None,
    split: Annotated[Literal["test", "valid"], typer.Option(help="test or valid targets")] = "test",
    seed: Annotated[int, typer.Option(help="tie-break seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """Evaluate a model version: full ranking, HR/NDCG/MRR @10 and @20."""
    _threads(threads)
    from recstream.trainer.pipeline import run_eval

    try:
        result = run_eval(model, data, seed=seed, which=split)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"eval: {exc}", err=True)
        raise typer.Exit(2) from None
    _write_json(json_out, result)
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


def bench_quality(
    dataset: Annotated[str, typer.Option(
        help="ml-100k or beauty (from --data-root), or synthetic (the demo's stream)")],
    json_out: Annotated[Path, typer.Option("--json", help="write the results here")],
    data_root: Annotated[Path, typer.Option(help="folder holding <dataset>/")] = Path("../shared/data"),
    peers: Annotated[str, typer.Option(help=(
        "peers, comma separated ('' for none): RecBole's sasrec,bert4rec,gru4rec; "
        "RecTools' rectools-sasrec,rectools-bert4rec"))] = "sasrec,bert4rec,gru4rec",
    peer_budget_s: Annotated[float | None, typer.Option(
        help="training seconds per peer (default: to early stop)")] = None,
    fresh_peers: Annotated[bool, typer.Option(help="ignore cached peer results")] = False,
    loss: Annotated[str, typer.Option(
        help="our rows' loss: full, sampled, or auto (sampled above 20,000 items)")] = "auto",
    ours: Annotated[str, typer.Option(help="our rows, comma separated: "
                                      "ours,no-time,no-text,sasrec ('' for none)")] = (
        "ours,no-time,no-text,sasrec"),
    budget_s: Annotated[float | None, typer.Option(
        help="training seconds per row of ours (default: to early stop)")] = None,
    max_epochs: Annotated[int, typer.Option(help="epoch cap, ours and peers")] = 200,
    patience: Annotated[int, typer.Option(help="epochs without a better valid NDCG@10")] = 10,
    seed: Annotated[int, typer.Option(help="first seed; the peers' seed")] = 0,
    seeds: Annotated[int, typer.Option(
        help="train and test each of our rows with seeds seed..seed+N-1 (peers: one)")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda, ours and peers")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Ours + ablations + RecBole and RecTools peers on one split, ranked by one evaluator."""
    _threads(threads)
    from recstream.bench.quality import BenchError, QualityOptions, run_quality

    opts = QualityOptions(
        dataset=dataset, data_root=data_root, json_out=json_out,
        peers=[p for p in peers.split(",") if p.strip()],
        ours=[o for o in ours.split(",") if o.strip()],
        peer_budget_s=peer_budget_s, fresh_peers=fresh_peers, loss=loss, budget_s=budget_s,
        max_epochs=max_epochs, patience=patience, seed=seed, seeds=seeds,
        device=device, progress=progress,
    )
    try:
        run_quality(opts)
    except BenchError as exc:
        typer.echo(f"bench quality: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Called by ``recstream.cli`` at start-up."""
    app.command("train")(train)
    app.command("eval")(eval_)
    groups["bench"].command("quality")(bench_quality)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the 'recstream' command")
