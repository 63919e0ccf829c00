"""The one Faust app of the stream worker, built from settings by a factory."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.sensors import Sensor
from faust.types import AgentT, AppT, TableT
from recstream.schemas import KafkaSettings
from recstream.schemas import topics as names
from recstream.stream import monitoring
from recstream.stream.agents import (
    BatchProcessor,
    Emitter,
    FatalHandler,
    ProducerEmitter,
    define_agent,
)
from recstream.stream.deletions import DeletionProcessor, define_deletions_agent
from recstream.stream.faust_gaps import FaustGaps, committed_offset
from recstream.stream.hole_watch import HoleWatch
from recstream.stream.intake import DirectIntake
from recstream.stream.last_recommendations import (
    OnlineQuality,
    define_last_recommendations_table,
    define_recommendations_agent,
    define_recommendations_topic,
)
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.settings import WorkerSettings
from recstream.stream.tables import DeliveredTable, DirectWriter, define_table
from recstream.stream.take import Batcher, behind_highwater
from recstream.stream.topics import WorkerTopics, define_topics

log = logging.getLogger(__name__)

#: Exit status when outputs could not be produced (see exit_without_commit).
EXIT_FATAL = 70

#: Producer batch limit per partition, bytes (Faust's default is 16 KiB). aiokafka
#: keeps one batch in flight per partition and makes ``send()`` wait while the
#: next one is full, so 16 KiB (~10 score requests or states) per partition per
#: broker round trip capped the worker's output. Must stay below the broker's
#: max message size (1 MiB by default).
PRODUCER_MAX_BATCH_BYTES = 512 * 1024


def exit_without_commit(exc: BaseException) -> None:
    """Stop the process at once, committing nothing.

    A graceful stop would let ``take_events`` acknowledge (and Faust commit)
    the batch whose outputs were not delivered. Dying here means that batch is
    redelivered after the restart; the idempotent state update absorbs it.
    """
    log.critical("fatal error while processing a batch, exiting uncommitted: %r", exc)
    logging.shutdown()
    os._exit(EXIT_FATAL)


class ReadinessSensor(Sensor):
    """``ready`` = 1 between the end of a rebalance (tables recovered) and the next one."""

    def __init__(self, metrics: WorkerMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def on_rebalance_start(self, app: AppT) -> dict[str, Any]:
        self._metrics.ready.set(0)
        return {}

    def on_rebalance_end(self, app: AppT, state: dict[str, Any]) -> None:
        self._metrics.ready.set(1)
        log.info("worker ready: partitions assigned, tables recovered")


def _highwater(app: faust.App, tp: Any) -> int | None:
    """The consumer's last known end offset of ``tp``, from its fetches; None when
    unknown (not fetched yet, not assigned, consumer not started)."""
    try:
        return app.consumer.highwater(tp)
    except (ConsumerNotStarted, AssertionError):  # aiokafka asserts the assignment
        return None


@dataclass(frozen=True)
class WorkerApp:
    app: faust.App
    topics: WorkerTopics
    table: TableT
    processor: BatchProcessor
    agent: AgentT
    metrics: WorkerMetrics
    deletions: DeletionProcessor
    deletions_agent: AgentT
    #: Call ``gaps.install()`` before starting the app (stream.faust_gaps).
    gaps: FaustGaps
    #: The events agent's intake: hand it to the worker's fetch loop
    #: (stream.faust_drain) to feed the agent past the conductor (stream.intake).
    intake: DirectIntake


def widen_producer_buffer(app: faust.App, batch_size: int) -> None:
    """Let table changelog records queue up without stopping the consumer.

    Faust table writes queue their changelog records in a buffer drained by a
    background task; above ``ProducerBuffer.max_messages`` (a class constant,
    100) Faust's conductor holds every incoming message until the buffer
    ebbs: "producer buffer full" 384 times in a 200k-event bench run, when
    user_sequences still wrote through it. That table no longer does
    (stream.tables.DirectWriter), but the recommendations agent still writes
    up to ``batch_size`` last_recommendations entries per batch. The buffer
    is still flushed before offsets are committed. Call with the event loop
    set: it creates the app's producer.
    """
    app.producer.buffer.max_messages = 4 * batch_size


def _credentials(kafka: KafkaSettings) -> Any:
    if kafka.security_protocol == "PLAINTEXT":
        return None
    ssl_context = kafka.aiokafka_kwargs().get("ssl_context")
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=ssl_context,
    )


def create_app(
    settings: WorkerSettings,
    *,
    metrics: WorkerMetrics | None = None,
    emitter: Emitter | None = None,
    on_fatal: FatalHandler = exit_without_commit,
) -> WorkerApp:
    """Build the app, its topics, table and agent. No I/O happens here."""
    metrics = metrics or WorkerMetrics()
    partitions = settings.kafka.partitions
    app = faust.App(
        settings.app_id,
        broker=settings.kafka.faust_broker_url,
        broker_credentials=_credentials(settings.kafka),
        broker_client_id=f"{settings.app_id}-{settings.worker_id}",
        store=settings.store_url,
        datadir=str(settings.state_dir),
        # docs/embedded-broker.md defect 2: Tansu holds JoinGroup for session_timeout/2, so
        # Faust's 60 s default means ~36 s to become ready; 6 s gives ~5 s.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        consumer_group_instance_id=settings.kafka.group_instance_id,
        topic_partitions=partitions,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        # Room for a full take() batch on top of what is being processed.
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        web_enabled=False,
        autodiscover=False,
        # Every table of the worker: agents await their own changelog sends.
        Table=DeliveredTable,
    )
    app.sensors.add(ReadinessSensor(metrics))
    topics = define_topics(app, settings.app_id, partitions)
    table = define_table(app, partitions)
    # Online quality: the last list per user, read back from `recommendations`.
    last_recommendations = define_last_recommendations_table(app, partitions)
    online = OnlineQuality(last_recommendations, metrics)
    emitter = emitter or ProducerEmitter(app)
    recommendations = define_recommendations_topic(app, partitions)
    # The topics whose every record must reach its agent: holes are re-read.
    gaps = FaustGaps(
        app, [*topics.source.topics, names.USER_DELETIONS, *recommendations.topics]
    )

    def hole_watch() -> HoleWatch:
        return HoleWatch(
            metrics,
            seek=lambda tp, offset: app.consumer.seek(tp, offset),
            committed=lambda tp: committed_offset(app, tp),
            skip_hole=gaps.skip,
        )

    # Every write and delete of user_sequences goes through this one writer.
    writer = DirectWriter(table, emitter.send_records)
    processor = BatchProcessor(
        table=table,
        emitter=emitter,
        metrics=metrics,
        topics=topics,
        max_len=settings.max_seq_len,
        partitions=partitions,
        observer=online,
        holes=hole_watch(),
        writer=writer,
    )
    batcher = Batcher(
        settings.batch_size,
        settings.batch_window_s,
        behind_highwater(lambda tp: _highwater(app, tp)),
    )
    agent = define_agent(app, topics, processor, batcher=batcher, on_fatal=on_fatal)
    deletions = DeletionProcessor(
        tables=[last_recommendations],
        writer=writer,
        emitter=emitter,
        metrics=metrics,
        dlq=topics.dlq,
        partitions=partitions,
        holes=hole_watch(),
    )
    deletions_agent = define_deletions_agent(app, partitions, deletions, on_fatal=on_fatal)
    define_recommendations_agent(
        app,
        recommendations,
        online,
        batch_size=settings.batch_size,
        batch_window_s=settings.batch_window_s,
        on_fatal=on_fatal,
        holes=hole_watch(),
    )
    monitoring.install(
        app,
        metrics,
        [*topics.source.topics, *recommendations.topics, names.USER_DELETIONS],
        [table, last_recommendations],
    )
    intake = DirectIntake(app, batcher, topics.source.topics, metrics)
    return WorkerApp(
        app, topics, table, processor, agent, metrics, deletions, deletions_agent, gaps, intake
    )
