"""``recstream bench scorer``: users/s and batch latency of every scoring backend.

Registered by ``recstream.cli`` (a ``commands_*`` module); torch and friends are
imported inside the command so that ``recstream --help`` stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from recstream.cli_options import EngineOption


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


def _age_bias_layers(value: str) -> str:
    from recstream.inference.model import AGE_BIAS_LAYERS

    if value not in AGE_BIAS_LAYERS:
        raise typer.BadParameter(f"--age-bias-layers must be {' or '.join(AGE_BIAS_LAYERS)}")
    return value


def bench_scorer(
    json_out: Annotated[Path | None, typer.Option("--json", help="write rows + summary here")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    model: Annotated[
        Path | None, typer.Option("--model", help="also bench this trained model version dir")
    ] = None,
    batches: Annotated[str, typer.Option(help="batch sizes")] = "1,16,64,256",
    lengths: Annotated[str, typer.Option(help="sequence lengths")] = "50,200",
    backends: Annotated[
        str | None, typer.Option(help="comma-separated subset [default: all available]")
    ] = None,
    budget: Annotated[float, typer.Option(help="timed seconds per backend and shape")] = 1.0,
    threads: Annotated[int | None, typer.Option(help="CPU threads [default: all usable]")] = None,
    compile_shapes: Annotated[
        str, typer.Option(help="torch.compile at: headline (b64 L200), all, none")
    ] = "headline",
    cache_dir: Annotated[
        Path | None, typer.Option(help="ONNX exports and TensorRT engines [default: temp dir]")
    ] = None,
    age_bias_layers: Annotated[
        str, typer.Option(help="the MovieLens-1M-shaped model's age-bias layers: last, all")
    ] = "last",
    reference: Annotated[bool, typer.Option(
        help="also time RecBole's SASRec at the same shape (needs `make bench-deps`)")] = True,
) -> None:
    """Users/s and p50/p99 batch latency per backend, batch size and length; baseline = eager torch."""
    from recstream.bench.jsonio import write_report
    from recstream.bench.scorer import BenchConfig, format_table, run_bench
    from recstream.inference.backends.base import BackendUnavailable

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, got {device!r}")
    if compile_shapes not in ("headline", "all", "none"):
        raise typer.BadParameter("--compile-shapes must be headline, all or none")
    logging.getLogger("recstream.bench.scorer").setLevel(logging.INFO)
    cfg = BenchConfig(
        device=device,
        batches=_ints(batches, "--batches"),
        lengths=_ints(lengths, "--lengths"),
        model_dir=model,
        backends=tuple(b.strip() for b in backends.split(",")) if backends else None,
        budget_s=budget,
        threads=threads,
        compile_shapes=compile_shapes,
        cache_dir=cache_dir,
        age_bias_layers=_age_bias_layers(age_bias_layers),
        reference=reference,
    )
    try:
        report = run_bench(cfg)
    except BackendUnavailable as exc:
        typer.echo(f"bench scorer: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_table(report))
    if json_out is not None:
        write_report(json_out, report.to_dict())
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer, groups: Mapping[str, typer.Typer]) -> None:
    groups["bench"].command("scorer")(bench_scorer)
    groups["bench"].command("scorer-service")(bench_scorer_service)


def bench_scorer_service(
    json_out: Annotated[Path | None, typer.Option("--json", help="write rows + summary here")] = None,
    requests: Annotated[int, typer.Option(help="score requests in the backlog")] = 5000,
    seq_len: Annotated[int, typer.Option(help="events per request")] = 200,
    batch: Annotated[int, typer.Option(help="scorer micro-batch size")] = 256,
    backend: Annotated[str, typer.Option(help="scoring backend of the model")] = "auto",
    threads: Annotated[int | None, typer.Option(help="scorer CPU threads")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="serve this model version dir [default: a MovieLens-1M-shaped one]")] = None,
    age_bias_layers: Annotated[
        str, typer.Option(help="the MovieLens-1M-shaped model's age-bias layers: last, all")
    ] = "last",
    engine: EngineOption = "auto",
) -> None:
    """Scorer service end to end (Kafka in, Kafka out): users/s from a backlog."""
    from recstream.bench.scorer_service import format_table, run_service_bench, write_json
    from recstream.broker import BrokerError

    try:
        report = run_service_bench(
            requests=requests, seq_len=seq_len, batch=batch, backend=backend, threads=threads,
            model_dir=model, age_bias_layers=_age_bias_layers(age_bias_layers), engine=engine,
        )
    except BrokerError as exc:
        typer.echo(f"bench scorer-service: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_table(report))
    if json_out is not None:
        write_json(report, json_out)
        typer.echo(f"wrote {json_out}")
