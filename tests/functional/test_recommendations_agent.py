"""The recommendations agent (online quality) in Faust's test context: RocksDB, no broker."""

from __future__ import annotations

from test_worker_agent import Harness, harness, wait_until  # noqa: F401 - harness is a fixture


def test_a_recommendations_offset_that_never_arrived_is_sought_back(harness: Harness) -> None:  # noqa: F811
    # A hole in `recommendations` would stall its commits: watched the same way.
    (agent_def,) = [a for name, a in harness.worker.app.agents.items()
                    if name.endswith("remember_recommendations")]  # fmt: skip
    metrics = harness.worker.metrics

    async def go() -> None:
        async with agent_def.test_context() as agent:
            await agent.put(b"not a recommendation", key=b"u", partition=0, wait=False)
            agent.sent_offset += 2  # offsets 1..2 never reach the agent
            await agent.put(b"not a recommendation", key=b"u", partition=0, wait=False)
            await wait_until(harness, lambda: metrics.recommendations_bad._value.get() >= 2)

    harness.run(go())
    assert metrics.offset_holes.labels("seek")._value.get() == 1
