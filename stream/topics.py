"""The worker's topics, declared on one app, raw bytes both ways: the agents validate
values themselves and forward a bad record's original bytes to the DLQ."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT
from recstream.schemas import topics as names


def repartition_topic_name(app_id: str) -> str:
    """Where events go whose record key does not place them on their user's partition
    (named like the topics of Faust's ``group_by``)."""
    return f"{app_id}-{names.EVENTS}-repartition"


def raw_topic(app: faust.App, *topics: str, partitions: int, internal: bool = False) -> TopicT:
    return app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=internal)  # fmt: skip


@dataclass(frozen=True)
class WorkerTopics:
    #: ``events`` and the repartition topic: one subscription, so Faust's assignor
    #: co-partitions them (same partition number, same worker).
    source: TopicT
    repartition: str
    score_requests: str = names.SCORE_REQUESTS
    dlq: str = names.EVENTS_DLQ


def define_topics(app: faust.App, app_id: str, partitions: int) -> WorkerTopics:
    repartition = repartition_topic_name(app_id)
    # internal: Faust creates the repartition topic where it is missing
    # (``events`` itself is created up front and left alone).
    source = raw_topic(app, names.EVENTS, repartition, partitions=partitions, internal=True)
    return WorkerTopics(source, repartition)
