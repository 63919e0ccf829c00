"""``recstream top``: the dashboard's figures as a live terminal view (rich).

Reads the dashboard's ``/api/snapshot`` JSON, so it shows exactly what the
page shows, and needs only the dashboard's URL.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class TopError(RuntimeError):
    pass


def fetch_snapshot(
    base_url: str, user: str | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/api/snapshot" + (f"?user={user}" if user else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise TopError(f"no answer from the dashboard at {url}: {exc}") from None


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(snap: dict[str, Any], source: str) -> Group:
    live, m = snap["live"], snap.get("metrics") or {}
    figures = Table(show_header=False, box=None, padding=(0, 2))
    figures.add_column(style="bold")
    figures.add_column(justify="right")
    figures.add_column(style="bold")
    figures.add_column(justify="right")
    lat = live["latency_ms"]
    figures.add_row(
        "events in",
        f"{_n(live['events_total'])}  ({_n(live['events_per_s'], 1)}/s)",
        "recs out",
        f"{_n(live['recs_total'])}  ({_n(live['recs_per_s'], 1)}/s)",
    )
    figures.add_row(
        "latency p50/p95/p99",
        f"{_n(lat['p50'])} / {_n(lat['p95'])} / {_n(lat['p99'])} ms",
        "consumer lag",
        _n(m.get("lag_total")),
    )
    figures.add_row(
        "dead letters",
        f"{_n(live['dlq_total'])}  "
        + " ".join(f"{r}={n}" for r, n in sorted(live["dlq_by_reason"].items())),
        "model",
        f"{m.get('model_version') or '-'}  (age {_n(m.get('model_age_s'))} s, "
        f"swaps {_n((m.get('swaps') or {}).get('model_swaps', 0))})",
    )
    figures.add_row(
        "scorer batch mean",
        _n(m.get("scorer_batch_mean"), 1),
        "tables",
        " ".join(f"{t}={_n(n)}" for t, n in sorted((m.get("table_keys") or {}).items())) or "-",
    )
    online = Table(title="online quality (each list judged against the next event)")
    for col in ("model version", "judged", "HR@10", "NDCG@10", "HR@10 last 1000"):
        online.add_column(col, justify="right" if col != "model version" else "left")
    for version, o in sorted((m.get("online") or {}).items()):
        online.add_row(
            version,
            _n(o["trials"]),
            _n(o["hr_at_10"], 3),
            _n(o["ndcg_at_10"], 3),
            _n(o["rolling_hr_at_10"], 3),
        )
    procs = Text.assemble(
        (f"{source}  ", "dim"),
        *(
            (
                f"{name} {'ready' if m.get(name + '_ready') else ('up' if m.get(name + '_up') else 'down')}  ",
                "",
            )
            for name in ("worker", "scorer")
            if snap.get("metrics_configured")
        ),
        (time.strftime("%H:%M:%S"), "dim"),
    )
    return Group(procs, figures, online)


def run_top(
    url: str,
    *,
    interval_s: float = 1.0,
    iterations: int | None = None,
    console: Console | None = None,
) -> int:
    """Refresh until Ctrl-C, or ``iterations`` times; return the number of refreshes shown."""
    console = console or Console()
    shown = 0
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while iterations is None or shown < iterations:
            live.update(render(fetch_snapshot(url), url))
            shown += 1
            if iterations is not None and shown >= iterations:
                break
            time.sleep(interval_s)
    return shown
