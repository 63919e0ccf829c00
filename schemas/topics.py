"""Topic names and their layout: the one place they are spelled out."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "events"
EVENTS_DLQ = "events-dlq"
SCORE_REQUESTS = "score-requests"
RECOMMENDATIONS = "recommendations"
MODEL_UPDATES = "model-updates"
USER_DELETIONS = "user-deletions"
ITEMS = "items"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    keyed_by_user: bool
    description: str
    #: Log compaction: the newest record of each key is kept for good.
    compacted: bool = False


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS, True, "user behaviour events"),
    TopicSpec(EVENTS_DLQ, True, "malformed events: original bytes, reason, source offset"),
    TopicSpec(SCORE_REQUESTS, True, "a user's fresh sequence, to be scored"),
    TopicSpec(RECOMMENDATIONS, True, "ranked items per user"),
    TopicSpec(MODEL_UPDATES, False, "published model versions, keyed by model name"),
    TopicSpec(USER_DELETIONS, True, "users to forget"),
    TopicSpec(ITEMS, False, "item catalogue: upserts and retirements, keyed by item id",
              compacted=True),
)

ALL_TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)
COMPACTED_TOPICS: frozenset[str] = frozenset(t.name for t in TOPICS if t.compacted)
