"""Events from a librdkafka producer (confluent-kafka), each compression codec a
producer may choose, reach the worker's table and the trainer's consumer.

Producers in other languages mostly sit on librdkafka or the Java client, both
of which compress batches when asked (lz4 and zstd are common choices). Our
consumers must decode every codec: the worker and the scorer read with
aiokafka, the trainer with kafka-python.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from recstream.schemas.topics import EVENTS

from recstream.broker import Broker
from recstream.processes import WorkerProcess

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 50
T0 = int(time.time() * 1000) - 3_600_000


def _produce(bootstrap: str) -> int:
    from confluent_kafka import Producer

    sent = 0
    for codec in CODECS:
        # librdkafka's own defaults otherwise: idempotence on, acks=all, 5 ms linger.
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                             "enable.idempotence": True, "acks": "all"})  # fmt: skip
        errors: list[str] = []

        def report(err: object, _msg: object, errors: list[str] = errors) -> None:
            if err is not None:
                errors.append(str(err))

        for n in range(PER_CODEC):
            user = f"{codec}-u{n % 10}"
            event = {"event_id": f"{codec}-{n}", "user_id": user, "item_id": f"i{n % 17}",
                     "event_type": "view", "ts": T0 + n}  # fmt: skip
            producer.produce(EVENTS, json.dumps(event).encode(), key=user.encode(),
                             on_delivery=report)  # fmt: skip
        assert producer.flush(60) == 0 and not errors, (codec, errors)
        sent += PER_CODEC
    return sent


def test_every_codec_of_a_librdkafka_producer_is_read(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    sent = _produce(broker.bootstrap)
    with WorkerProcess(recstream_env, tmp_path / "worker.log") as worker:
        worker.wait_ready(120)
        worker.wait_metric("recstream_worker_events_applied_total", sent, timeout_s=120)
        assert worker.events_done() == sent  # none dead-lettered, none left behind

    # The trainer's client (kafka-python) decodes the same batches.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)  # fmt: skip
    try:
        parts = [TopicPartition(EVENTS, p) for p in consumer.partitions_for_topic(EVENTS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ids = {json.loads(r.value)["event_id"] for r in consumer}
    finally:
        consumer.close()
    assert len(ids) == sent
