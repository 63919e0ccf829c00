"""stream.take.DirectIntake on a real Faust app's consumer (no broker): what it does
to a record is what the conductor and the agent's stream did (tracking, one
reference, the skip of records fetched before a rebalance)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.transport.consumer import ConsumerMessage
from faust.types import TP
from recstream.stream.metrics import WorkerMetrics
from recstream.stream.take import Batcher, DirectIntake

TP0 = TP("events", 0)


def _app() -> faust.App:
    app = faust.App("intake-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    app.flow_control.resume()
    app.consumer_generation_id = 3
    # The agent's topic acknowledges (as Faust marks every agent's source topic).
    app.topics._acking_topics.add(TP0.topic)
    return app


def _message(offset: int, generation: int = 3) -> ConsumerMessage:
    return ConsumerMessage(
        TP0.topic, TP0.partition, offset, 0.0, 0, [], b"user-1", b'{"v": 1}', None,
        tp=TP0, generation_id=generation,
    )


def _intake(app: faust.App, max_: int = 10, metrics: WorkerMetrics | None = None) -> DirectIntake:
    batcher = Batcher(max_, 1.0, lambda message: True)
    return DirectIntake(app, batcher, [TP0.topic], metrics or WorkerMetrics())


def test_a_record_is_tracked_buffered_and_acknowledged_once_the_agent_acks() -> None:
    app = _app()
    intake = _intake(app)
    message = _message(5)
    assert intake.offer(message) is None
    assert message in app.consumer.unacked  # a commit cannot pass it yet
    assert message.refcount == 1
    # Faust's stall check ("Stream has not started processing") reads this.
    assert TP0 in app.monitor.stream_inbound_time
    (event,) = intake.batcher.take()
    assert event.message is message
    assert (event.key, event.value) == (b"user-1", b'{"v": 1}')
    assert event.ack()  # what stream.ack does after delivery
    assert app.consumer._acked[TP0] == [5]
    assert message not in app.consumer.unacked


@pytest.mark.parametrize("why", ["flow-suspended", "older-generation"])
def test_a_record_fetched_before_a_rebalance_is_dropped_unacknowledged(why: str) -> None:
    app = _app()
    metrics = WorkerMetrics()
    intake = _intake(app, metrics=metrics)
    if why == "flow-suspended":
        app.flow_control.suspend()
        message = _message(5)
    else:
        message = _message(5, generation=2)
    assert intake.offer(message) is None
    assert len(intake.batcher) == 0
    assert metrics.registry.get_sample_value("recstream_worker_events_stale_total") == 1
    # Neither tracked nor acknowledged: the seek after the rebalance reads it again.
    assert message not in app.consumer.unacked
    assert not app.consumer._acked.get(TP0)


def test_a_full_batcher_holds_the_fetch_loop_until_the_batch_is_taken() -> None:
    async def main() -> None:
        intake = _intake(_app(), max_=2)
        assert intake.offer(_message(1)) is None
        wait: Any = intake.offer(_message(2))
        assert wait is not None
        waiting = asyncio.ensure_future(wait)
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert [e.message.offset for e in intake.batcher.take()] == [1, 2]
        await asyncio.wait_for(waiting, 1)

    asyncio.run(main())
