"""``make demo``: the whole product on one machine, with live figures.

Starts the broker, then the worker, the scorer, the side trainer and the
dashboard as real child processes, waits for the first recommendation (the
scorer starts on the co-occurrence model and hot-swaps each version the
trainer publishes; see :mod:`recstream.demo_versions`), replays a stream at a steady
rate with a few malformed events mixed in, and reports what came out:
recommendations, DLQ, and event -> recommendation latency measured from this
process's send of an event to its receipt of the recommendation that event
triggered. The worker folds a user's events of one batch into one score
request, so only some events trigger a recommendation; latency is measured
over those.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from recstream import dashboard_child, harness
from recstream import demo_versions as dv
from recstream.broker import ENGINES, BrokerError, make_broker
from recstream.harness import Latency, percentile
from recstream.processes import (
    Child,
    ChildFailed,
    embedded_broker_env,
    free_port,
    recstream_command,
    stop_all,
)
from recstream.schemas.messages import Event, Recommendation, now_ms
from recstream.schemas.topics import EVENTS
from recstream.synthetic import CATEGORIES, CatalogItem

#: The synthetic stream is generated up front; beyond this the replay ends early.
MAX_EVENTS = 500_000
#: Where the time goes, per measured recommendation: demo send -> worker read,
#: worker read -> scorer send, scorer send -> demo receipt (harness.SEGMENTS).
STAGES = ("to_worker", "worker_to_scorer_emit", "to_demo")


T = TypeVar("T")


class DemoError(RuntimeError):
    pass


class ReplayData(Protocol):
    @property
    def events(self) -> Sequence[Event]: ...
    @property
    def items(self) -> dict[str, CatalogItem]: ...


@dataclass(frozen=True)
class DemoOptions:
    #: 4 minutes: time for the first Transformer version and at least one more.
    duration_s: float = 240.0
    #: Sized for 2 cores shared by broker, worker, scorer, trainer and dashboard.
    rate: float = 150.0
    data: Path | None = None
    json_out: Path | None = None
    users: int = 2000
    items: int = 1000
    seed: int = 7
    malformed: int = 6
    run_dir: Path | None = None
    startup_timeout_s: float = 180.0
    partitions: int = 4
    samples: int = 3
    #: The live page's port; taken if free, else any free port; 0: any free port.
    dashboard_port: int = dashboard_child.DEFAULT_PORT
    #: auto (Kafka where Java 17+ is found, else Tansu), kafka or tansu.
    engine: str = "auto"
    #: Run the side trainer (the scorer then hot-swaps what it publishes).
    trainer: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}")
        if self.duration_s <= 0 or self.rate <= 0:
            raise ValueError("--duration and --rate must be positive")
        if self.malformed < 0:
            raise ValueError("--malformed must be >= 0")
        if self.data is not None and not self.data.exists():
            raise ValueError(f"--data {self.data}: no such file or folder")
        if self.data is None and (self.users < 1 or self.items < len(CATEGORIES)):
            raise ValueError(f"--users must be >= 1 and --items >= {len(CATEGORIES)} "
                             "(one item per category at least)")


@dataclass
class Figures:
    """What the demo observed; updated by the reader task and the replay loop."""

    events_in: int = 0
    malformed_sent: int = 0
    dlq: int = 0
    users: set[str] = field(default_factory=set)
    #: Recommendations read; timed (latency, stages) for events sent after start-up only.
    latency: Latency = field(default_factory=lambda: Latency(segment_names=STAGES))
    latest: dict[str, Recommendation] = field(default_factory=dict)
    #: user -> their last few (item_id, event_type), for the sample tables.
    history: dict[str, deque[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=5))
    )
    per_user: Counter[str] = field(default_factory=Counter)
    #: Per-version online quality and swaps; set when the replay starts.
    tally: dv.VersionTally | None = None
    watch: dv.TrainerWatch | None = None
    scorer_counters: dict[str, float] = field(default_factory=dict)

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        value = percentile(self.latency.samples_ms if values is None else values, q)
        return None if value is None else round(value, 1)

    def received(self, rec: Recommendation, now: float) -> None:
        took = self.latency.received(rec, now)
        if self.tally is not None:
            self.tally.received(rec, now / 1000, took)
        self.users.add(rec.user_id)
        self.latest[rec.user_id] = rec

    def dead_letters(self, n: int) -> None:
        self.dlq += n


def run_demo(opts: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    run_dir = opts.run_dir or Path("state") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    data = _load(opts)
    console.print(
        f"[bold]recstream demo[/]: {len(data.events):,} events ready, {len(data.items):,} items; "
        f"logs and state in {run_dir}"
    )
    items_path = _prepare_texts(opts, data, run_dir, console)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # A demo starts from nothing: Kafka's data of an earlier run in this folder goes.
    shutil.rmtree(run_dir / "kafka", ignore_errors=True)
    try:
        broker = make_broker(opts.engine, run_dir, partitions=opts.partitions,
                             log_path=run_dir / "broker.log")
    except BrokerError as exc:
        raise DemoError(str(exc)) from None
    children: list[Child] = []
    started = time.monotonic()
    try:
        try:
            broker.start()
        except BrokerError as exc:
            raise DemoError(str(exc)) from None
        env = embedded_broker_env(
            broker.bootstrap,
            RECSTREAM_PARTITIONS=str(opts.partitions),
            fresh_state=run_dir / "state",
        )
        ports = {"worker": free_port(), "scorer": free_port(), "trainer": free_port()}
        children.extend(_start_pipeline(opts, env, ports, run_dir, items_path))
        dashboard, dashboard_url = dashboard_child.start_dashboard(
            broker.bootstrap,
            env,
            run_dir / "dashboard.log",
            dashboard_child.pick_port(opts.dashboard_port),
            f"http://127.0.0.1:{ports['worker']}",
            f"http://127.0.0.1:{ports['scorer']}",
        )
        children.append(dashboard)
        console.print(f"{broker.engine} broker on {broker.bootstrap}; "
                      f"{', '.join(c.name for c in children[:-1])} starting ...")
        try:
            dashboard_child.wait_serving(dashboard, dashboard_url)
        except ChildFailed as exc:
            raise DemoError(f"{exc}\n{dashboard.describe_log()}") from None
        console.print(
            f"[bold]dashboard:[/] {dashboard_url}  (live while the demo runs; "
            f"or `recstream top --url {dashboard_url}`)"
        )
        figures = Figures()
        if opts.trainer:
            figures.watch = dv.TrainerWatch(run_dir / "state" / "trainer" / "state.json", 0.0)
        figures = asyncio.run(_cancelled_on_sigterm(
            _run_pipeline(opts, broker.bootstrap, data, children, console, figures,
                          f"http://127.0.0.1:{ports['scorer']}/metrics")
        ))  # fmt: skip
    finally:
        # A second Ctrl-C must not cut the clean-up short: it is bounded anyway
        # (SIGTERM, a grace period, then SIGKILL).
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop_all(children)
            broker.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    summary = _summary(opts, figures, run_dir, time.monotonic() - started)
    summary["engine"] = broker.engine
    summary["dashboard_url"] = dashboard_url
    _print_samples(console, figures, data.items, opts.samples)
    _print_summary(console, summary)
    dv.print_versions(console, summary)
    if opts.json_out:
        from recstream.bench.provenance import provenance

        opts.json_out.parent.mkdir(parents=True, exist_ok=True)
        # Under its own key: the summary's `versions` are the served model versions.
        report = {**summary, "provenance": provenance((broker.engine,))}
        opts.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return summary


def _prepare_texts(
    opts: DemoOptions, data: ReplayData, run_dir: Path, console: Console
) -> Path | None:
    """The catalogue's texts for the trainer, embedded once (MiniLM, cached on disk)."""
    if not opts.trainer:
        return None
    path = dv.write_item_texts(data.items, run_dir / "items.jsonl")
    with console.status("embedding the catalogue's texts (MiniLM; cached) ..."):
        took = dv.precompute_text_embeddings(path)
    console.print(f"item texts: {len(data.items):,} embedded or read from cache in {took:.1f}s")
    return path


def _start_pipeline(
    opts: DemoOptions,
    env: dict[str, str],
    ports: dict[str, int],
    run_dir: Path,
    items_path: Path | None,
) -> list[Child]:
    """Worker, scorer and (unless --no-trainer) the side trainer, on one registry."""
    registry = {"RECSTREAM_MODEL_REGISTRY": str((run_dir / "models").resolve())}
    extra: dict[str, dict[str, str]] = {"worker": {}, "scorer": {}}
    if opts.trainer and items_path is not None:
        extra["scorer"] = {**registry, **dv.SCORER_ENV}
        extra["trainer"] = {**registry, **dv.TRAINER_ENV,
                            "RECSTREAM_TRAINER_ITEMS": str(items_path.resolve())}
        shutil.rmtree(run_dir / "models", ignore_errors=True)
    started = []
    for name, own in extra.items():
        own_env = {**env, **own, "RECSTREAM_METRICS_PORT": str(ports[name])}
        started.append(
            Child(name, recstream_command(name), own_env, run_dir / f"{name}.log").start()
        )
    return started


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _load(opts: DemoOptions) -> ReplayData:
    wanted = min(MAX_EVENTS, int(opts.rate * opts.duration_s * 1.1) + 1000)
    if opts.data is not None:
        from recstream.movielens import DataFormatError, load

        try:
            return load(opts.data, limit=wanted)
        except DataFormatError as exc:
            raise DemoError(str(exc)) from None
    from recstream.synthetic import generate

    return generate(n_events=wanted, n_users=opts.users, n_items=opts.items, seed=opts.seed)


async def _cancelled_on_sigterm(work: Awaitable[T]) -> T:
    """Await ``work`` (the pipeline); a SIGTERM cancels it and ends as KeyboardInterrupt."""
    # SIGTERM cancels this task (as asyncio.run does for Ctrl-C) instead of
    # raising KeyboardInterrupt wherever the loop happens to be: raised inside
    # aiokafka's own tasks, it once left the clean-up below waiting for good
    # (the demo did not exit within 90 s of a SIGTERM).
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        if main is not None:
            main.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt(f"signal {signal.SIGTERM}") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _interrupt)  # what run_demo installed


async def _run_pipeline(
    opts: DemoOptions,
    bootstrap: str,
    data: ReplayData,
    children: list[Child],
    console: Console,
    figures: Figures,
    scorer_metrics: str,
) -> Figures:
    async with harness.replay_clients(
        bootstrap, figures.received, on_dead_letters=figures.dead_letters
    ) as (producer, reader):
        run = _Run(opts, producer, iter(data.events), figures, children, console, reader)
        try:
            await _warm_up(run)
            await _replay(run)
        except harness.ReplayError as exc:
            raise DemoError(str(exc)) from None
        figures.scorer_counters = await asyncio.to_thread(dv.scrape_counters, scorer_metrics)
    return figures


async def _send(producer: AIOKafkaProducer, event: Event, figures: Figures, timed: bool) -> Any:
    if timed:
        figures.latency.timed_send(event.event_id)
        if figures.tally is not None:
            figures.tally.judge(event.item_id, figures.latest.get(event.user_id))
    figures.events_in += 1
    figures.history[event.user_id].append((event.item_id, event.event_type))
    figures.per_user[event.user_id] += 1
    return await producer.send(
        EVENTS, event.model_dump_json(exclude_none=True).encode(), key=event.user_id.encode()
    )


@dataclass
class _Run:
    """What the warm-up and the replay work with."""

    opts: DemoOptions
    producer: AIOKafkaProducer
    stream: Iterator[Event]
    figures: Figures
    children: list[Child]
    console: Console
    reader: asyncio.Task[None]


async def _warm_up(run: _Run) -> None:
    """Trickle events until the first recommendation shows the pipeline is live."""
    opts, producer, stream, figures, children = (
        run.opts, run.producer, run.stream, run.figures, run.children
    )

    async def send_next() -> bool:
        event = next(stream, None)
        if event is not None:
            await _send(producer, event, figures, timed=False)
        return event is not None

    with run.console.status("waiting for the first recommendation ..."):
        try:
            took = await harness.warm_up(send_next, lambda: figures.latency.first_at is not None,
                                         lambda: _check(children), opts.startup_timeout_s)
        except harness.NotReady as exc:
            tails = "\n".join(c.describe_log() for c in children)
            raise DemoError(f"{exc}\n{tails}") from None
    run.console.print(
        f"pipeline ready after {took:.1f}s; replaying at "
        f"{opts.rate:.0f} events/s for {opts.duration_s:.0f}s"
    )


async def _replay(run: _Run) -> None:
    """Replay at the rate asked for, with the malformed events mixed in, then drain."""
    opts, producer, stream, figures = run.opts, run.producer, run.stream, run.figures
    planned = int(opts.rate * opts.duration_s)
    # Spread the malformed events evenly through the replay.
    bad_at = {planned * (i + 1) // (opts.malformed + 1): i for i in range(opts.malformed)}
    acks: list[asyncio.Future[Any]] = []
    t0 = time.monotonic()
    figures.tally = dv.VersionTally(t0=time.time())
    if figures.watch is not None:
        figures.watch.t0 = time.time()
    polled = t0

    async def send_next(i: int) -> bool:
        if i in bad_at:
            acks.append(await _send_malformed(producer, bad_at[i], figures))
        event = next(stream, None)  # None: the stream is exhausted, the replay ends early
        if event is not None:
            acks.append(await _send(producer, event, figures, timed=True))
        return event is not None

    def check(phase: str = "") -> None:
        nonlocal acks, polled
        acks = _raise_failed(acks)
        _check(run.children, run.reader, figures.watch)
        if not phase and figures.watch is not None and time.monotonic() - polled >= 1.0:
            figures.watch.poll()
            polled = time.monotonic()
        live.update(_progress(figures, time.monotonic() - t0, opts, phase))

    with Live(_progress(figures, 0.0, opts), console=run.console, refresh_per_second=4) as live:
        await harness.paced(send_next, planned, opts.rate, lambda _: check(),
                            max_s=opts.duration_s)  # fmt: skip
        await asyncio.gather(*acks)
        # Drain: stop when recommendations have stopped arriving for a while.
        await harness.drain(figures.latency, lambda: check("draining"))
        live.update(_progress(figures, time.monotonic() - t0, opts, "done"))
    if figures.watch is not None:
        figures.watch.poll()


def _raise_failed(acks: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    pending = []
    for ack in acks:
        if not ack.done():
            pending.append(ack)
        elif ack.exception() is not None:
            raise DemoError(f"producing to {EVENTS} failed: {ack.exception()}")
    return pending


def _check(
    children: Sequence[Child],
    reader: asyncio.Task[None] | None = None,
    watch: dv.TrainerWatch | None = None,
) -> None:
    """Raise if a child died; a dead trainer is only noted (the scorer keeps serving)."""
    for child in children:
        try:
            child.check_alive()
        except ChildFailed as exc:
            if child.name != "trainer":
                raise DemoError(str(exc)) from None
            if watch is not None and watch.died is None:
                watch.died = f"trainer exited with code {child.returncode}; see {child.log_path}"
    if reader is not None:
        harness.check_reader(reader)


def _malformed(n: int) -> bytes:
    """The n-th malformed event: one of each way a producer can get it wrong."""
    good = {
        "event_id": f"bad-{n}",
        "user_id": "u-bad",
        "item_id": "i-bad",
        "event_type": "view",
        "ts": now_ms(),
    }
    kinds: tuple[bytes, ...] = (
        b"{not json",
        orjson.dumps({k: v for k, v in good.items() if k != "user_id"}),
        orjson.dumps({**good, "event_type": "teleport"}),
        orjson.dumps({**good, "ts": str(good["ts"])}),  # strict: no string -> int coercion
        orjson.dumps({**good, "ts": now_ms() + 7 * 24 * 3600 * 1000}),
        b"",
    )
    return kinds[n % len(kinds)]


async def _send_malformed(producer: AIOKafkaProducer, n: int, figures: Figures) -> Any:
    figures.events_in += 1
    figures.malformed_sent += 1
    return await producer.send(EVENTS, _malformed(n), key=b"demo-malformed")


def _progress(figures: Figures, elapsed: float, opts: DemoOptions, phase: str = "") -> Text:
    p50, p99 = figures.percentile(0.5), figures.percentile(0.99)
    lat = (
        f"p50 {p50:.0f} ms  p99 {p99:.0f} ms"
        if p50 is not None and p99 is not None
        else "p50 -  p99 -"
    )
    return Text.assemble(
        (phase or f"{elapsed:5.1f}/{opts.duration_s:.0f}s", "dim"),
        "  ",
        ("events in ", "bold"),
        f"{figures.events_in:,}  ",
        ("recs out ", "bold"),
        f"{figures.latency.recommendations:,}  ",
        ("users ", "bold"),
        f"{len(figures.users):,}  ",
        ("DLQ ", "bold"),
        f"{figures.dlq}  ",
        ("latency ", "bold"),
        lat,
        ("  model ", "bold"),
        _serving(figures),
    )


def _serving(figures: Figures) -> str:
    """The version of the latest list, and the versions seen so far."""
    tally = figures.tally
    if tally is None or not tally.versions:
        return "-"
    last = max(tally.versions.values(), key=lambda v: v.served_from_s)
    return f"{last.version} ({len(tally.versions)} served)"


def _summary(opts: DemoOptions, f: Figures, run_dir: Path, wall_s: float) -> dict[str, Any]:
    return {
        "events_in": f.events_in,
        "recommendations_out": f.latency.recommendations,
        "users_with_recommendations": len(f.users),
        "dlq": f.dlq,
        "p50_ms": f.percentile(0.5),
        "p99_ms": f.percentile(0.99),
        "malformed_sent": f.malformed_sent,
        "latency_samples": len(f.latency.samples_ms),
        "stage_p50_ms": {k: f.percentile(0.5, v) for k, v in f.latency.segments_ms.items()},
        "rate_target": opts.rate,
        "duration_s": opts.duration_s,
        "wall_s": round(wall_s, 1),
        "data": str(opts.data) if opts.data else "synthetic",
        "run_dir": str(run_dir),
        **dv.summary_keys(f.tally, f.watch, f.scorer_counters),
    }


def _title(items: dict[str, CatalogItem], item_id: str) -> str:
    item = items.get(item_id)
    return f"{item.title} [dim]({item.category})[/]" if item else item_id


def _print_samples(console: Console, f: Figures, items: dict[str, CatalogItem], n: int) -> None:
    """The latest list of the most active users, next to what they just did."""
    busiest = sorted(f.latest, key=lambda u: (-f.per_user[u], u))[:n]
    for user in busiest:
        rec = f.latest[user]
        table = Table(title=f"user {user}: {f.per_user[user]} events, model {rec.model_version}")
        table.add_column("recently (newest first)")
        table.add_column("recommended now")
        recent = [f"{_title(items, i)} · {etype}" for i, etype in reversed(f.history[user])]
        recommended = [_title(items, r.item_id) for r in rec.items[:5]]
        for i in range(max(len(recent), len(recommended))):
            table.add_row(
                recent[i] if i < len(recent) else "",
                recommended[i] if i < len(recommended) else "",
            )
        console.print(table)


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="recstream demo summary", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    labels = {
        "events_in": "events in (incl. malformed)",
        "malformed_sent": "malformed events sent",
        "recommendations_out": "recommendations out",
        "users_with_recommendations": "users with recommendations",
        "dlq": "dead letters (DLQ)",
        "p50_ms": "event -> recommendation p50 (ms)",
        "p99_ms": "event -> recommendation p99 (ms)",
        "latency_samples": "triggering events measured",
        "wall_s": "wall time (s)",
    }
    for key, label in labels.items():
        value = summary[key]
        table.add_row(label, "-" if value is None else f"{value:,}")
    stages = summary["stage_p50_ms"]
    for key, label in (
        ("to_worker", "  p50 demo send -> worker read (ms)"),
        ("worker_to_scorer_emit", "  p50 worker read -> scorer send (ms)"),
        ("to_demo", "  p50 scorer send -> demo receipt (ms)"),
    ):
        value = stages[key]
        table.add_row(label, "-" if value is None else f"{value:,}")
    console.print(table)
