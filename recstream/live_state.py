"""What the dashboard keeps from the topics it reads: rates, latencies, per-user timelines.

Fed record by record (``events``, ``recommendations``, ``events-dlq``) by the
dashboard's consumer; asked for a JSON-ready snapshot once a second. Plain
Python with an injected clock, so it is tested without a broker.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from recstream.harness import percentile

#: Seconds of history behind the rates and latency percentiles.
WINDOW_S = 10.0
#: Users whose timelines are kept (least recently active dropped first).
MAX_USERS = 20_000
EVENTS_PER_USER = 20
RECS_PER_USER = 10


@dataclass
class UserTimeline:
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_PER_USER))
    recs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECS_PER_USER))
    count: int = 0


class LiveState:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.events_total = 0
        self.recs_total = 0
        self.dlq_total = 0
        self.dlq_by_reason: Counter[str] = Counter()
        self.unreadable = 0
        # (arrival time, ...) within WINDOW_S, for rates and percentiles.
        self._event_times: deque[float] = deque()
        self._rec_times: deque[tuple[float, float]] = deque()  # (arrival, latency ms)
        self._users: OrderedDict[str, UserTimeline] = OrderedDict()
        self.versions: Counter[str] = Counter()
        #: The model version of the newest recommendation read.
        self.latest_version: str | None = None

    # -- feeding ----------------------------------------------------------------

    def add_event(self, raw: bytes | None) -> None:
        now = self._clock()
        self.events_total += 1
        self._event_times.append(now)
        try:
            e = orjson.loads(raw or b"")
            user = e["user_id"]
            entry = {
                "event_id": str(e["event_id"]),
                "item_id": str(e["item_id"]),
                "event_type": str(e["event_type"]),
                "ts": int(e["ts"]),
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # malformed: the worker sends it to the DLQ, counted there
        if not isinstance(user, str):
            return
        timeline = self._timeline(user)
        timeline.events.append(entry)
        timeline.count += 1

    def add_recommendation(self, raw: bytes | None) -> tuple[list[str], int] | None:
        """Count a list; return its items and ``emitted_ms`` (None if unreadable)."""
        now = self._clock()
        try:
            r = orjson.loads(raw or b"")
            user = r["user_id"]
            latency_ms = now * 1000 - int(r["ingest_ms"])
            entry = {
                "trigger_event_id": str(r["trigger_event_id"]),
                "model_version": str(r["model_version"]),
                "items": [str(i["item_id"]) for i in r["items"]],
                "latency_ms": round(latency_ms, 1),
                "explanation": [
                    {"item_id": str(x["item_id"]), "weight": float(x["weight"])}
                    for x in r.get("explanation") or []
                ],
            }
            emitted_ms = int(r["emitted_ms"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unreadable += 1
            return None
        self.recs_total += 1
        self.versions[entry["model_version"]] += 1
        self.latest_version = entry["model_version"]
        self._rec_times.append((now, latency_ms))
        if isinstance(user, str):
            self._timeline(user).recs.append(entry)
        return entry["items"], emitted_ms

    def add_dead_letter(self, raw: bytes | None) -> None:
        self.dlq_total += 1
        try:
            reason = str(orjson.loads(raw or b"")["reason"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            reason = "unreadable"
        self.dlq_by_reason[reason] += 1

    def _timeline(self, user: str) -> UserTimeline:
        timeline = self._users.get(user)
        if timeline is None:
            timeline = self._users[user] = UserTimeline()
            if len(self._users) > MAX_USERS:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user)
        return timeline

    # -- reading ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        cutoff = now - WINDOW_S
        while self._event_times and self._event_times[0] < cutoff:
            self._event_times.popleft()
        while self._rec_times and self._rec_times[0][0] < cutoff:
            self._rec_times.popleft()
        latencies = sorted(lat for _, lat in self._rec_times)
        return {
            "t": now,
            "events_total": self.events_total,
            "recs_total": self.recs_total,
            "events_per_s": round(len(self._event_times) / WINDOW_S, 1),
            "recs_per_s": round(len(self._rec_times) / WINDOW_S, 1),
            "latency_ms": {
                name: None if (v := percentile(latencies, q)) is None else round(v, 1)
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "dlq_total": self.dlq_total,
            "dlq_by_reason": dict(self.dlq_by_reason),
            "users_seen": len(self._users),
            "busiest_users": self.busiest_users(),
        }

    def busiest_users(self, n: int = 8) -> list[str]:
        """The most active of the recently active users (with a recommendation)."""
        recent = list(self._users.items())[-500:]
        ranked = sorted((u for u in recent if u[1].recs), key=lambda u: (-u[1].count, u[0]))
        return [user for user, _ in ranked[:n]]

    def user_view(self, user: str | None) -> dict[str, Any] | None:
        """A user's recent events (newest first), each with the list it led to, if any.

        ``hit_rank`` marks an event whose item was in the list the user had
        before it (the online metric's judgement, as the dashboard sees it).
        """
        if user is None:
            busiest = self.busiest_users(1)
            user = busiest[0] if busiest else None
        timeline = self._users.get(user) if user is not None else None
        if timeline is None:
            return {"user_id": user, "events": [], "found": False} if user else None
        recs = {r["trigger_event_id"]: r for r in timeline.recs}
        rows = []
        previous: list[str] | None = None
        for event in timeline.events:
            rec = recs.get(event["event_id"])
            hit = (
                previous.index(event["item_id"])
                if previous and event["item_id"] in previous[:10]
                else None
            )
            rows.append({**event, "hit_rank": hit, "recommendation": rec})
            if rec is not None:
                previous = rec["items"]
        rows.reverse()
        return {"user_id": user, "events": rows, "found": True, "event_count": timeline.count}
