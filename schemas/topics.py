"""Topic names and their layout: the one place they are spelled out."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "events"
EVENTS_DLQ = "events-dlq"
SCORE_REQUESTS = "score-requests"
RECOMMENDATIONS = "recommendations"
MODEL_UPDATES = "model-updates"
USER_DELETIONS = "user-deletions"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    keyed_by_user: bool
    description: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS, True, "user behaviour events"),
    TopicSpec(EVENTS_DLQ, True, "malformed events: original bytes, reason, source offset"),
    TopicSpec(SCORE_REQUESTS, True, "a user's fresh sequence, to be scored"),
    TopicSpec(RECOMMENDATIONS, True, "ranked items per user"),
    TopicSpec(MODEL_UPDATES, False, "published model versions, keyed by model name"),
    TopicSpec(USER_DELETIONS, True, "users to forget"),
)

ALL_TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)
