"""The ``items`` topic under a real scorer: a retired item is never recommended in a
list emitted after the scorer applied the retirement, and a scorer started later
never recommends it at all (it reads the compacted topic before its first list); a
new item with a text is recommended to the users whose histories it resembles,
without a new model version."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recstream.schemas.messages import ItemUpdate, Recommendation, ScoreRequest
from recstream.schemas.topics import ITEMS, RECOMMENDATIONS, SCORE_REQUESTS

from recstream import metrics_scrape
from recstream.broker import Broker
from recstream.processes import (
    Child,
    free_port,
    is_ready,
    recstream_command,
    stop_all,
    wait_for,
)

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
CATALOGUE = [f"c{n:02d}" for n in range(30)]
HOT = "c00"  # follows every other item in round 0: co-occurrence ranks it first
USERS = 40
#: Seconds from publishing a new item to the scorer ranking it (MiniLM loads first).
NEW_ITEM_BOUND_S = 30


def requests(round_no: int, rng: random.Random, with_hot: int) -> list[ScoreRequest]:
    """``with_hot`` users have HOT in their history (teaching the model its pull);
    the others do not, so only a retirement keeps it from their lists."""
    out = []
    for u in range(USERS):
        items = [*rng.sample(CATALOGUE[1:], 4), HOT] if u < with_hot else rng.sample(
            CATALOGUE[1:], 3)
        ts = [T0 + round_no * 100_000 + 1000 * i for i in range(len(items))]
        out.append(ScoreRequest(
            user_id=f"u{u}-r{round_no}", items=items, ts=ts, event_types=["view"] * len(items),
            trigger_event_id=f"u{u}-r{round_no}", trigger_ts=ts[-1], ingest_ms=int(time.time() * 1000),
        ))  # fmt: skip
    return out


async def send(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=k.encode()) for k, v in values])
    finally:
        await producer.stop()


def send_requests(bootstrap: str, reqs: list[ScoreRequest]) -> None:
    asyncio.run(send(bootstrap, SCORE_REQUESTS,
                     [(r.user_id, r.model_dump_json().encode()) for r in reqs]))  # fmt: skip


def read_all(bootstrap: str, want: int, timeout_s: float = 120.0) -> list[Recommendation]:
    async def go() -> list[Recommendation]:
        consumer = AIOKafkaConsumer(RECOMMENDATIONS, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        got: list[Recommendation] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(got) < want and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [Recommendation.model_validate_json(r.value) for r in records]
        finally:
            await consumer.stop()
        return got

    return asyncio.run(go())


def metric(port: int, name: str) -> float:
    return metrics_scrape.value(f"http://127.0.0.1:{port}", name) or 0.0


def start_scorer(env: dict[str, str], log: Path) -> tuple[Child, int]:
    port = free_port()
    scorer = Child(log.stem, recstream_command("scorer"),
                   {**env, "RECSTREAM_METRICS_PORT": str(port), "RECSTREAM_TOP_K": "5"},
                   log).start()  # fmt: skip
    wait_for(lambda: is_ready(port), 120, "scorer ready", 0.2, scorer)
    return scorer, port


def test_a_retired_item_is_never_recommended_once_applied(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(5)
    scorer, port = start_scorer(recstream_env, tmp_path / "scorer.log")
    later = None
    try:
        send_requests(broker.bootstrap, requests(0, rng, USERS))  # teaches HOT's pull
        send_requests(broker.bootstrap, requests(1, rng, 0))
        before = read_all(broker.bootstrap, 2 * USERS)
        assert any(HOT in {i.item_id for i in r.items} for r in before
                   if r.user_id.endswith("-r1")), "the test needs HOT recommended before"  # fmt: skip

        retire = ItemUpdate(item_id=HOT, available=False, updated_ms=int(time.time() * 1000))
        asyncio.run(send(broker.bootstrap, ITEMS, [(HOT, retire.model_dump_json().encode())]))
        wait_for(lambda: metric(port, "recstream_scorer_catalogue_records") >= 1, 60,
                 "retirement applied", 0.1, scorer)  # fmt: skip
        applied_ms = int(time.time() * 1000)
        assert metric(port, "recstream_scorer_catalogue_unavailable") == 1
        send_requests(broker.bootstrap, requests(2, rng, USERS // 2))
        after = [r for r in read_all(broker.bootstrap, 3 * USERS) if r.emitted_ms > applied_ms]
        assert len(after) >= USERS
        assert not [r.user_id for r in after if HOT in {i.item_id for i in r.items}]

        # A scorer started now reads the compacted topic before its first list (its
        # co-occurrence starts empty and learns HOT's pull from round 3's first half).
        assert stop_all([scorer]) == {"scorer": 0}
        later, _ = start_scorer(recstream_env, tmp_path / "scorer2.log")
        send_requests(broker.bootstrap, requests(3, rng, USERS // 2))
        fresh = [r for r in read_all(broker.bootstrap, 4 * USERS) if r.user_id.endswith("-r3")]
        assert len(fresh) == USERS
        assert not [r.user_id for r in fresh if HOT in {i.item_id for i in r.items}]
    finally:
        stop_all([c for c in (scorer, later) if c is not None])


GROUPS = {"j": "Blue Note jazz saxophone quartet vinyl record", "g": "steel garden spade and hoe tool"}


def _grouped_data(folder: Path, rng: random.Random) -> Path:
    """Two groups of users, each buying only its group's ten items (RecBole atomic
    files, with item titles): a jazz user's next item is a jazz item."""
    inter = folder / "grouped.inter"
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(80):
        group = "jg"[u % 2]
        for n, item in enumerate(rng.sample(range(10), 8)):
            rows.append(f"{group}u{u}\t{group}{item}\t{1_600_000_000 + 3600 * (8 * u + n)}")
    inter.write_text("\n".join(rows) + "\n")
    titles = ["item_id:token\tmovie_title:token_seq"]
    titles += [f"{g}{n}\t{text} number {n}" for g, text in GROUPS.items() for n in range(10)]
    inter.with_suffix(".item").write_text("\n".join(titles) + "\n")
    return inter


def _group_request(user: str, items: list[str], round_no: int) -> ScoreRequest:
    ts = [T0 + round_no * 100_000 + 1000 * i for i in range(len(items))]
    return ScoreRequest(user_id=user, items=items, ts=ts, event_types=["view"] * len(items),
                        trigger_event_id=f"{user}-{round_no}", trigger_ts=ts[-1],
                        ingest_ms=int(time.time() * 1000))  # fmt: skip


def test_a_new_item_with_text_is_recommended_without_a_new_version(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    """Published with a jazz text, an item no version has seen reaches the jazz users'
    lists within NEW_ITEM_BOUND_S, stamped with the same version, and not the
    garden users' lists."""
    from typer.testing import CliRunner

    from recstream.cli import app

    rng = random.Random(7)
    model = tmp_path / "model"
    res = CliRunner().invoke(app, [
        "train", "--data", str(_grouped_data(tmp_path, rng)), "--out", str(model), "--text", "on",
        "--id-dropout", "0.3", "--max-len", "8", "--d-model", "32", "--max-epochs", "40",
        "--patience", "8", "--lr", "3e-3", "--batch-size", "32", "--threads", "1", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    env = {**recstream_env, "RECSTREAM_MODEL_DIR": str(model), "RECSTREAM_SCORER_BACKEND": "onnxruntime"}
    scorer, port = start_scorer(env, tmp_path / "scorer.log")
    try:
        new = ItemUpdate(item_id="j-new", text=f"{GROUPS['j']}, new pressing",
                         category="jazz", updated_ms=int(time.time() * 1000))  # fmt: skip
        published = time.monotonic()
        asyncio.run(send(broker.bootstrap, ITEMS, [(new.item_id, new.model_dump_json().encode())]))
        wait_for(lambda: metric(port, "recstream_scorer_text_only_items") == 1, NEW_ITEM_BOUND_S,
                 "the new item ranked by its text", 0.1, scorer)  # fmt: skip
        ranked_after_s = time.monotonic() - published
        users = [(f"{g}user{n}", g) for n in range(20) for g in "jg"]
        send_requests(broker.bootstrap, [
            _group_request(user, [f"{g}{i}" for i in rng.sample(range(10), 6)], 1)
            for user, g in users
        ])  # fmt: skip
        recs = read_all(broker.bootstrap, len(users))
        assert len(recs) == len(users)
        with_new = {r.user_id for r in recs if "j-new" in {i.item_id for i in r.items}}
        jazz = {u for u, g in users if g == "j"}
        print(f"new item ranked {ranked_after_s:.1f}s after publishing; in {len(with_new & jazz)}"
              f" of {len(jazz)} jazz lists, {len(with_new - jazz)} of {len(jazz)} garden lists")
        assert len(with_new & jazz) >= 0.75 * len(jazz)
        assert len(with_new - jazz) <= 0.25 * len(jazz)
        assert {r.model_version for r in recs} == {json.loads((model / "config.json").read_text())["version"]}
    finally:
        stop_all([scorer])
