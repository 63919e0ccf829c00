"""The worker, built completely by one function from its settings: :func:`create_app`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import AgentT, TableT
from recstream.schemas import KafkaSettings
from recstream.schemas import topics as names
from recstream.schemas.probes import ProbeServer, loop_responds
from recstream.stream import faust_internals, monitoring, tansu_compat
from recstream.stream.agents import (
    BatchProcessor,
    Emitter,
    FatalHandler,
    ProducerEmitter,
    define_agent,
)
from recstream.stream.deletions import DeletionProcessor, define_deletions_agent
from recstream.stream.last_recommendations import (
    LAST_RECOMMENDATIONS,
    OnlineQuality,
    define_last_recommendations_table,
    define_recommendations_agent,
)
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.offset_gaps import HoleWatch
from recstream.stream.settings import WorkerSettings
from recstream.stream.tables import USER_SEQUENCES, DeliveredTable, DirectWriter, define_table
from recstream.stream.take import Batcher, DirectIntake, behind_highwater
from recstream.stream.topics import define_topics, repartition_topic_name

log = logging.getLogger(__name__)

#: Exit status when outputs could not be produced (see exit_without_commit).
EXIT_FATAL = 70

#: Producer batch limit per partition, bytes (Faust's default, 16 KiB, capped the
#: worker's output: aiokafka keeps one batch in flight per partition). Below the
#: broker's max message size (1 MiB by default).
PRODUCER_MAX_BATCH_BYTES = 512 * 1024


def exit_without_commit(exc: BaseException) -> None:
    """Stop at once, committing nothing: the batch whose outputs were not delivered
    is redelivered after the restart (the state update is idempotent)."""
    log.critical("fatal error while processing a batch, exiting uncommitted: %r", exc)
    logging.shutdown()
    os._exit(EXIT_FATAL)


def _highwater(app: faust.App, tp: Any) -> int | None:
    """The consumer's last known end offset of ``tp`` (None: not fetched yet)."""
    try:
        return app.consumer.highwater(tp)
    except (ConsumerNotStarted, AssertionError):  # aiokafka asserts the assignment
        return None


@dataclass(frozen=True)
class WorkerApp:
    app: faust.App
    table: TableT  # user_sequences
    agent: AgentT  # the events agent
    deletions_agent: AgentT
    metrics: WorkerMetrics
    intake: DirectIntake  # the events topics' records, from the fetch loop to the agent
    probes: ProbeServer | None  # /metrics, /healthz, /readyz where a port is set

    def close(self) -> None:
        if self.probes is not None:
            self.probes.close()


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


def internal_topics(app_id: str) -> dict[str, dict[str, str]]:
    """The topics Faust would create as the worker starts, with their configs: the
    tables' changelogs (compacted, as Faust makes them) and the repartition topic."""
    changelogs = {f"{app_id}-{t}-changelog": {"cleanup.policy": "compact"}
                  for t in (USER_SEQUENCES, LAST_RECOMMENDATIONS)}  # fmt: skip
    return {**changelogs, repartition_topic_name(app_id): {}}


def _faust_app(settings: WorkerSettings, replication_factor: int) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=settings.kafka.faust_broker_url,
        broker_credentials=_credentials(settings.kafka),
        broker_client_id=f"{settings.app_id}-{settings.worker_id}",
        store="rocksdb://",
        datadir=str(settings.state_dir),
        # Tansu holds JoinGroup for half the session (docs/embedded-broker.md, defect 2).
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        consumer_group_instance_id=settings.kafka.group_instance_id,
        topic_partitions=settings.kafka.partitions,
        # Changelogs and repartition topics, replicated like the input topics.
        topic_replication_factor=replication_factor,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        web_enabled=False,
        autodiscover=False,
        Table=DeliveredTable,  # agents await their own tables' changelog sends
    )


def create_app(
    settings: WorkerSettings,
    *,
    tansu: bool = False,
    replication_factor: int = 1,
    metrics: WorkerMetrics | None = None,
    emitter: Emitter | None = None,
    on_fatal: FatalHandler = exit_without_commit,
) -> WorkerApp:
    """Build the worker: app, tables, agents, intake, Faust patches and probes.

    ``tansu``: apply stream.tansu_compat. ``replication_factor``: of the topics
    Faust creates (changelogs, repartition), that of ``events`` on the broker. Serves the probes where
    ``settings.metrics_port`` is set; no other I/O. Call with the event loop
    the app will run on set as the current one.
    """
    metrics = metrics or WorkerMetrics()
    metrics.broker_compat.set(1 if tansu else 0)
    partitions = settings.kafka.partitions
    app = _faust_app(settings, replication_factor)
    topics = define_topics(app, settings.app_id, partitions)
    table = define_table(app, USER_SEQUENCES, partitions, settings.rocksdb_mb)
    last_recommendations = define_last_recommendations_table(app, partitions,
                                                             settings.rocksdb_mb)
    online = OnlineQuality(last_recommendations, metrics)
    emitter = emitter or ProducerEmitter(app)
    writer = DirectWriter(table, emitter.send_records)  # every write of user_sequences
    processor = BatchProcessor(
        emitter=emitter, metrics=metrics, topics=topics, max_len=settings.max_seq_len,
        partitions=partitions, observer=online, holes=HoleWatch(metrics, app), writer=writer,
    )  # fmt: skip
    batcher = Batcher(
        settings.batch_size, settings.batch_window_s,
        behind_highwater(lambda tp: _highwater(app, tp)),
    )  # fmt: skip
    agent = define_agent(app, topics, processor, batcher=batcher, on_fatal=on_fatal)
    deletions = DeletionProcessor(
        tables=[last_recommendations], writer=writer, emitter=emitter, metrics=metrics,
        dlq=topics.dlq, partitions=partitions, holes=HoleWatch(metrics, app),
    )  # fmt: skip
    deletions_agent = define_deletions_agent(app, partitions, deletions, on_fatal=on_fatal)
    define_recommendations_agent(
        app, partitions, online, batch_size=settings.batch_size,
        batch_window_s=settings.batch_window_s, on_fatal=on_fatal, holes=HoleWatch(metrics, app),
    )  # fmt: skip
    # Every agent's topics: their holes are re-read (stream.offset_gaps).
    watched = [*topics.source.topics, names.USER_DELETIONS, names.RECOMMENDATIONS]
    monitoring.install(app, metrics, watched, [table, last_recommendations])
    intake = DirectIntake(app, batcher, topics.source.topics, metrics)
    faust_internals.install_fetch_loop(app, dict.fromkeys(intake.topics, intake.offer), watched)
    # Room for a batch's last_recommendations writes, which go through Faust's buffer.
    faust_internals.widen_producer_buffer(app, 4 * settings.batch_size)
    # Faust hard-codes a 1.5 s fetch wait; on Kafka as on Tansu, events then waited
    # up to that long at the worker (bench/RESULTS.md, "Kafka under the stream").
    faust_internals.set_fetch_wait(app, settings.fetch_wait_ms)
    log.info("consumer fetch wait %d ms (RECSTREAM_FETCH_WAIT_MS)", settings.fetch_wait_ms)
    if tansu:
        tansu_compat.install(app, settings.kafka)
    probes = None
    if settings.metrics_port:
        probes = metrics.serve(settings.metrics_port, live=loop_responds(app.loop))
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", settings.metrics_port)
    return WorkerApp(app, table, agent, deletions_agent, metrics, intake, probes)
