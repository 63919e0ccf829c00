"""``recstream api`` as a real process beside a real worker and scorer.

Events posted to the API reach the stream (answered only once acknowledged);
each user's latest list comes back from the API's replica of
``recommendations``; a user without one gets the popular list; bad input is a
4xx naming the field; a property-based client finds no 5xx on the live API; a
second API process started later converges on the same answers; a deleted
user's list is no longer served.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from recstream.inference.model import ModelConfig, SeqRecModel
from recstream.inference.model_dir import save_model_dir
from recstream.inference.registry import Registry, VersionInfo
from recstream.schemas.api import openapi_document
from recstream.schemas.messages import ItemUpdate, UserDeletion
from recstream.schemas.topics import ITEMS, MODEL_UPDATES, USER_DELETIONS
from recstream.trainer.publish import model_update

from recstream.broker import Broker
from recstream.processes import (
    Child,
    WorkerProcess,
    free_port,
    is_ready,
    recstream_command,
    stop_all,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 600_000
USERS = [f"api-u{n}" for n in range(8)]
TIMEOUT_S = 120.0


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def event(user: str, n: int, item: str) -> dict[str, Any]:
    return {"event_id": f"{user}-e{n}", "user_id": user, "item_id": item,
            "event_type": "view", "ts": T0 + 1000 * n}  # fmt: skip


def start_api(env: dict[str, str], log: Path) -> tuple[Child, int]:
    port = free_port()
    child = Child(log.stem, recstream_command("api", "--port", str(port)), env, log).start()
    wait_for(lambda: is_ready(port), TIMEOUT_S, f"{log.stem} ready", 0.2, child)
    return child, port


def wait_for_stream_lists(port: int, last: dict[str, str], api: Child) -> dict[str, Any]:
    """Until every user's list is the stream's, triggered by their last event."""
    deadline = time.monotonic() + TIMEOUT_S
    answers: dict[str, Any] = {}
    while True:
        api.check_alive()
        for user in USERS:
            status, body = call(port, "GET", f"/v1/users/{user}/recommendations?k=3")
            assert status == 200, body
            answers[user] = body
        if all(a["source"] == "stream" and a["trigger_event_id"] == last[u]
               for u, a in answers.items()):  # fmt: skip
            return answers
        assert time.monotonic() < deadline, answers
        time.sleep(0.5)


def test_api_serves_the_streams_lists_and_refuses_bad_input(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    # Two workers: the users' partitions are split between them; the API answers
    # from the topics, whichever worker owns a user.
    workers = [WorkerProcess(worker_env(recstream_env, tmp_path / f"state-{n}"),
                             tmp_path / f"worker-{n}.log").start() for n in range(2)]  # fmt: skip
    scorer = Child("scorer", recstream_command("scorer"), recstream_env,
                   tmp_path / "scorer.log").start()  # fmt: skip
    api = api2 = None
    try:
        api, port = start_api(recstream_env, tmp_path / "api.log")
        for worker in workers:
            worker.wait_ready(TIMEOUT_S)
        items = [f"item-{n}" for n in range(12)]
        batch = [event(u, n, items[(i + n) % len(items)])
                 for i, u in enumerate(USERS) for n in range(4)]  # fmt: skip
        status, body = call(port, "POST", "/v1/events", json.dumps(batch).encode())
        assert status == 202 and body["accepted"] == len(batch), body
        status, body = call(port, "POST", "/v1/events", json.dumps(event("api-solo", 0, "item-0")).encode())
        assert status == 202 and body["event_ids"] == ["api-solo-e0"], body
        last = {u: f"{u}-e3" for u in USERS}
        lists = wait_for_stream_lists(port, last, api)
        assert all(w.events_done() > 0 for w in workers)  # each worker owned some users
        for user, answer in lists.items():
            assert answer["model_version"] and 1 <= len(answer["items"]) <= 3
            history = {e["item_id"] for e in batch if e["user_id"] == user}
            assert not history & {i["item_id"] for i in answer["items"]}
            assert answer["age_ms"] >= 0
        assert call(port, "GET", f"/v1/items/{items[0]}/similar")[1]["source"] == "none"  # no model
        # exclude: never returned
        first = lists[USERS[0]]["items"][0]["item_id"]
        _, again = call(port, "GET", f"/v1/users/{USERS[0]}/recommendations?exclude={first}")
        assert first not in {i["item_id"] for i in again["items"]}

        # A user the stream never saw: the popular list, the posted items at its head.
        status, body = call(port, "GET", "/v1/users/nobody-yet/recommendations?k=5")
        assert status == 200 and body["source"] == "popular" and body["model_version"] is None
        assert len(body["items"]) == 5 and {i["item_id"] for i in body["items"]} <= set(items)
        status, pop = call(port, "GET", "/v1/popular?k=20")
        assert status == 200 and pop["events"] >= len(batch) + 1
        assert {i["item_id"] for i in pop["items"]} == {e["item_id"] for e in batch}

        assert call(port, "GET", "/openapi.json") == (200, openapi_document())
        _refusals_name_the_field(port)
        _readme_examples_run(port)
        _category_lists(broker.bootstrap, port, items, batch, api)
        _no_server_errors(port)

        # A second replica converges on the same lists from the topics alone.
        api2, port2 = start_api(recstream_env, tmp_path / "api2.log")
        for user in USERS:
            _, a = call(port, "GET", f"/v1/users/{user}/recommendations")
            _, b = call(port2, "GET", f"/v1/users/{user}/recommendations")
            a.pop("age_ms"), b.pop("age_ms")
            assert a == b

        # A forgotten user's list is served no more.
        producer = KafkaProducer(bootstrap_servers=recstream_env["RECSTREAM_KAFKA_BOOTSTRAP"])
        deletion = UserDeletion(user_id=USERS[1], requested_ms=int(time.time() * 1000))
        producer.send(USER_DELETIONS, deletion.model_dump_json().encode(),
                      key=USERS[1].encode()).get(timeout=30)  # fmt: skip
        producer.close()
        deadline = time.monotonic() + TIMEOUT_S
        while call(port, "GET", f"/v1/users/{USERS[1]}/recommendations")[1]["source"] != "popular":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        codes = stop_all([c for c in (api, api2) if c is not None])
        assert set(codes.values()) == {0}, codes  # SIGTERM: a clean exit
    finally:
        stop_all([c for c in (api, api2, scorer) if c is not None])
        for worker in workers:
            worker.terminate()


def _refusals_name_the_field(port: int) -> None:
    bad_ts = [event("u", 0, "i"), {**event("u", 1, "i"), "ts": "yesterday"}]
    cases: list[tuple[str, str, bytes | None, int, str | None]] = [
        ("GET", "/v1/popular?k=0", None, 400, "k"),
        ("GET", "/v1/popular?k=abc", None, 400, "k"),
        ("GET", "/v1/popular?kk=3", None, 400, "kk"),
        ("GET", "/v1/users/u/recommendations?k=101", None, 400, "k"),
        ("POST", "/v1/events", json.dumps(bad_ts).encode(), 400, "events[1].ts"),
        ("POST", "/v1/events", b"{not json", 400, "body"),
        ("POST", "/v1/events", b"[]", 400, "body"),
        ("POST", "/v1/events", json.dumps({"user_id": "u"}).encode(), 400, "event.event_id"),
        ("POST", "/v1/events", b"[" + b"1," * 600_000 + b"1]", 413, "body"),
        ("GET", "/v1/nothing-here", None, 404, None),
        ("DELETE", "/v1/popular", None, 405, None),
    ]
    for method, path, body, status, field in cases:
        got, answer = call(port, method, path, body)
        assert got == status, (method, path, got, answer)
        assert isinstance(answer, dict) and answer["field"] == field and answer["detail"], answer


def _category_lists(bootstrap: str, port: int, items: list[str], batch: list[dict[str, Any]],
                    api: Child) -> None:  # fmt: skip
    """Items given a category by the parity of their number: a user's list for a
    category holds k items of it (the catalogue has them), none of the user's history."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for n, item in enumerate(items):
        update = ItemUpdate(item_id=item, category=("even", "odd")[n % 2], updated_ms=n)
        producer.send(ITEMS, update.model_dump_json().encode(), key=item.encode()).get(timeout=30)
    producer.close()
    odd = {e["item_id"] for e in batch if items.index(e["item_id"]) % 2}

    def applied() -> bool:
        answer = call(port, "GET", "/v1/popular?k=20&category=odd")[1]
        return {i["item_id"] for i in answer["items"]} == odd

    wait_for(applied, 60, "the categories applied", 0.2, api)
    for user in USERS:
        status, body = call(port, "GET", f"/v1/users/{user}/recommendations?k=3&category=even")
        got = [i["item_id"] for i in body["items"]]
        history = {e["item_id"] for e in batch if e["user_id"] == user}
        assert status == 200 and len(got) == 3 and body["source"] == "stream", body
        assert all(items.index(i) % 2 == 0 for i in got) and not history & set(got), body
        assert 0 <= body["filled_from_popular"] <= 3


def _readme_examples_run(port: int) -> None:
    """The README's curl examples, as printed, against this API: each answers 2xx."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Serving API", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    script = block.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("curl ", "curl -sS --fail ")
    assert script.count("curl -sS --fail") == 6, script
    done = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def _fuzz(port: int, data: st.DataObject) -> None:
    from urllib.parse import quote, urlencode

    route = data.draw(st.sampled_from(["user", "popular", "similar", "events", "other"]))
    params = data.draw(st.dictionaries(st.sampled_from(["k", "exclude", "category", "window", "x"]), _TEXT, max_size=3))
    query = "?" + urlencode(params) if params else ""
    if route == "user":
        user = quote(data.draw(_TEXT), safe="")
        status, body = call(port, "GET", f"/v1/users/{user}/recommendations{query}")
    elif route == "popular":
        status, body = call(port, "GET", f"/v1/popular{query}")
    elif route == "similar":
        item = quote(data.draw(_TEXT), safe="")
        status, body = call(port, "GET", f"/v1/items/{item}/similar{query}")
    elif route == "events":
        value = data.draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=6),
            max_leaves=12,
        ))  # fmt: skip
        status, body = call(port, "POST", "/v1/events", json.dumps(value).encode())
    else:
        status, body = call(port, "GET", "/" + quote(data.draw(_TEXT), safe="/"))
    assert status < 500, (route, params, status, body)


def _no_server_errors(port: int) -> None:
    _fuzz(port)


def _publish(reg: Registry, rows: list[list[float]]) -> VersionInfo:
    """A version whose item table is exactly ``rows`` (items a, b, c, d)."""
    model = SeqRecModel(ModelConfig(n_items=4, max_len=4, d_model=4, n_heads=1, n_layers=1,
                                    use_text=False))  # fmt: skip
    with torch.no_grad():
        model.item_id.weight[1:] = torch.tensor(rows)
    staged = reg.staging_dir()
    save_model_dir(staged, model.eval(), ["a", "b", "c", "d"], {})
    return reg.publish(staged)


def test_similar_items_follow_the_announced_version_and_refuse_a_bad_one(
    broker: Broker, recstream_env: dict[str, str], tmp_path: Path
) -> None:
    reg = Registry(tmp_path / "models")
    _publish(reg, [[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0]])
    env = {**recstream_env, "RECSTREAM_MODEL_REGISTRY": str(reg.root)}
    api, port = start_api(env, tmp_path / "api.log")
    try:
        status, body = call(port, "GET", "/v1/items/a/similar?k=2")
        assert status == 200 and body["source"] == "model", body
        assert [i["item_id"] for i in body["items"]] == ["b", "c"]
        assert call(port, "GET", "/v1/items/unknown/similar")[1]["source"] == "none"

        v2 = _publish(reg, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.9, 0, 0.1, 0]])
        bad = _publish(reg, [[1, 0, 0, 0]] * 4)
        (Path(bad.path) / "model.safetensors").write_bytes(b"corrupted")
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for info in (v2, bad):
            update = model_update(info, "recstream")
            producer.send(MODEL_UPDATES, update.model_dump_json().encode(),
                          key=b"recstream").get(timeout=30)  # fmt: skip
        retire = ItemUpdate(item_id="b", available=False, updated_ms=int(time.time() * 1000))
        producer.send(ITEMS, retire.model_dump_json().encode(), key=b"b").get(timeout=30)
        producer.close()
        wait_for(lambda: api_log_has(tmp_path / "api.log", f"refused {bad.path}"), 60,
                 "the bad version refused", 0.2, api)  # fmt: skip
        # The newest (bad) one is tried first; then v2 loads, in a thread: under load
        # that takes a moment after the refusal is logged.
        wait_for(lambda: call(port, "GET", "/v1/items/a/similar?k=3")[1]["model_version"]
                 == v2.version, 60, "v2 answering after the refusal", 0.2, api)  # fmt: skip
        status, body = call(port, "GET", "/v1/items/a/similar?k=3")
        assert body["model_version"] == v2.version, body  # the good one answers
        assert [i["item_id"] for i in body["items"]] == ["d", "c"]  # b retired
    finally:
        assert stop_all([api]) == {"api": 0}


def api_log_has(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")
