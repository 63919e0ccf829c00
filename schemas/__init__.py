"""recstream message types, validation, topic names. Imports nothing of ours."""

from recstream.schemas.messages import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    DeadLetter,
    Event,
    InvalidEvent,
    ModelUpdate,
    Recommendation,
    ScoreRequest,
    UserDeletion,
    parse_event,
)
from recstream.schemas.settings import KafkaSettings

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "Event",
    "InvalidEvent",
    "KafkaSettings",
    "ModelUpdate",
    "Recommendation",
    "ScoreRequest",
    "UserDeletion",
    "parse_event",
]
