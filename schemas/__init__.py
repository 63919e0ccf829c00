"""recstream message types, validation, topic names. Imports nothing of ours."""

from recstream.schemas.messages import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    DeadLetter,
    Event,
    InvalidEvent,
    InvalidMessage,
    ModelUpdate,
    Recommendation,
    ScoreRequest,
    UserDeletion,
    parse_deletion,
    parse_event,
    parse_score_request,
)
from recstream.schemas.settings import KafkaSettings

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "Event",
    "InvalidEvent",
    "InvalidMessage",
    "KafkaSettings",
    "ModelUpdate",
    "Recommendation",
    "ScoreRequest",
    "UserDeletion",
    "parse_deletion",
    "parse_event",
    "parse_score_request",
]
