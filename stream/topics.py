"""The worker's topics, declared on one app."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT
from recstream.schemas import topics as names


def repartition_topic_name(app_id: str) -> str:
    """Where events go whose record key does not place them on their user's partition.

    Named like the topics of Faust's ``group_by`` (``<app>-<topic>-...-repartition``).
    """
    return f"{app_id}-{names.EVENTS}-repartition"


@dataclass(frozen=True)
class WorkerTopics:
    #: ``events`` plus the repartition topic: one subscription, so Faust's
    #: assignor co-partitions them (same partition number, same worker).
    source: TopicT
    repartition: str
    score_requests: str
    dlq: str


def define_topics(app: faust.App, app_id: str, partitions: int) -> WorkerTopics:
    repartition = repartition_topic_name(app_id)
    source = app.topic(
        names.EVENTS,
        repartition,
        key_type=bytes,
        value_type=bytes,
        # Raw bytes: the agent validates them itself and must forward the
        # original bytes of a bad event to the DLQ untouched.
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        # internal: Faust creates the repartition topic if it is missing (with
        # ``partitions``); ``events`` itself is pre-created and left alone.
        internal=True,
    )
    return WorkerTopics(
        source=source,
        repartition=repartition,
        score_requests=names.SCORE_REQUESTS,
        dlq=names.EVENTS_DLQ,
    )
