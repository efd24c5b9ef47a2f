"""The pipeline end to end on the real stack: HTTP and console producer in, events and database out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any, Dict, List, Optional

import aiohttp
import pytest

from app.kafka_clients import new_admin_client
from app.partitioning import partition_for, user_key

from .harness import (
    BOOTSTRAP,
    REPO,
    SECURE_HOME,
    Worker,
    World,
    allow_producer,
    events_of,
    fresh_user_id,
    kafka_tool_login,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration


async def post(worker: Worker, body: Any, wait: bool = True, raw: Optional[bytes] = None) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else json.dumps(body).encode()
        response = await http.post(
            f"{worker.url}/operations",
            params={"wait": "true" if wait else "false"},
            data=data,
            headers={"Content-Type": "application/json"},
        )
        await response.read()
        return response


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            return response.status, await response.json()


def db_rows(cql: Any, world: World, table: str, user_id: int, key: str = "user_id") -> List[Any]:
    return list(cql.execute(f"SELECT * FROM {world.keyspace}.{table} WHERE {key} = %s", (user_id,)))


def wait_db(
    cql: Any, world: World, table: str, user_id: int, count: int, timeout: float = 60.0, key: str = "user_id"
) -> List[Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = db_rows(cql, world, table, user_id, key)
        except Exception:  # noqa: BLE001 - the keyspace may not exist yet
            rows = []
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


async def user_events(world: World, user_id: int, count: int) -> List[Dict[str, Any]]:
    messages = await read_topic(world.topic("balance.events"), lambda m: len(events_of(m, [user_id])) >= count)
    return events_of(messages, [user_id])


async def test_topics_are_created_by_the_worker(world: World, worker: Worker) -> None:
    """The run's topics did not exist before its worker started: the sink subscribed to nothing."""
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    for name in ("balance.operations", "balance.events", "balance.operations.dlq", "balance.credits"):
        assert world.topic(name) in topics


async def test_http_deposit_reaches_table_events_and_database(world: World, worker: Worker, cql: Any) -> None:
    user = fresh_user_id()
    response = await post(worker, {"op_id": "dep-1", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1500})
    assert response.status == 200
    result = json.loads(await response.read())
    assert (result["status"], result["available"], result["seq"]) == ("accepted", 1500, 1)

    status, account = await get_json(f"{worker.url}/accounts/{user}")
    assert status == 200
    freshness = {"partition": account["partition"], "applied_offset": account["applied_offset"]}
    assert account == {
        "user_id": user,
        "seq": 1,
        "balances": {"1": {"available": 1500, "locked": 0}},
        "holds": [],
        **freshness,
    }
    # The cursor is written after the events are published, so the first answer of a partition may
    # come before it (null); it lands with the checkpoint's last step.
    deadline = time.monotonic() + 10
    while account["applied_offset"] is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        _, account = await get_json(f"{worker.url}/accounts/{user}")
    assert isinstance(account["applied_offset"], int) and account["applied_offset"] >= 0

    (event,) = await user_events(world, user, 1)
    assert event == result

    rows = wait_db(cql, world, "balances", user, 1)
    assert [(r.asset, r.available, r.locked, r.seq) for r in rows] == [(1, 1500, 0, 1)]
    history = wait_db(cql, world, "balance_events", user, 1)
    assert [(r.seq, r.op_id, r.status) for r in history] == [(1, "dep-1", "accepted")]

    status, body = await get_json(f"{worker.url}/accounts/{user}/events?limit=5")
    assert status == 200 and [e["op_id"] for e in body["events"]] == ["dep-1"]


async def test_submit_without_wait_answers_202(worker: Worker) -> None:
    user = fresh_user_id()
    response = await post(
        worker, {"op_id": "a", "kind": "deposit", "user_id": user, "asset": 2, "amount": "7"}, wait=False
    )
    assert response.status == 202
    assert json.loads(await response.read()) == {"op_id": "a", "status": "submitted"}


async def test_console_producer_operation_is_applied(world: World, worker: Worker, cql: Any) -> None:
    user = fresh_user_id()
    line = f'{user}|{{"op_id":"cli-1","kind":"deposit","user_id":{user},"asset":3,"amount":42}}\n'
    topic = world.topic("balance.operations")
    command = [str(REPO / "stack/bin/kafka-console-producer"), "--bootstrap-server", BOOTSTRAP, "--topic", topic]
    command += ["--property", "parse.key=true", "--property", "key.separator=|"]
    if SECURE_HOME is not None:  # as the principal that may write operations and nothing else
        await asyncio.to_thread(allow_producer, topic)
        command += ["--producer.config", str(kafka_tool_login("producer"))]
    await asyncio.to_thread(
        subprocess.run,
        command,
        input=line.encode(),
        check=True,
        timeout=120,
    )
    (event,) = await user_events(world, user, 1)
    assert (event["op_id"], event["status"], event["available"]) == ("cli-1", "accepted", 42)
    rows = wait_db(cql, world, "balances", user, 1)
    assert [(r.asset, r.available) for r in rows] == [(3, 42)]


async def test_transfer_across_partitions_lands_on_both(world: World, worker: Worker, cql: Any) -> None:
    payer = fresh_user_id()
    payee = fresh_user_id()
    while partition_for(user_key(payee), 8) == partition_for(user_key(payer), 8):
        payee = fresh_user_id()
    await post(worker, {"op_id": "d", "kind": "deposit", "user_id": payer, "asset": 1, "amount": 100})
    await post(worker, {"op_id": "l", "kind": "lock", "user_id": payer, "asset": 1, "amount": 60})
    response = await post(
        worker,
        {
            "op_id": "t",
            "kind": "transfer",
            "user_id": payer,
            "to_user_id": payee,
            "asset": 1,
            "amount": 60,
            "source": "locked",
        },
    )
    out = json.loads(await response.read())
    assert (out["kind"], out["status"], out["available"], out["locked"]) == ("transfer_out", "accepted", 40, 0)

    (incoming,) = await user_events(world, payee, 1)
    assert (incoming["kind"], incoming["amount"], incoming["counterparty"], incoming["seq"]) == (
        "transfer_in",
        60,
        payer,
        1,
    )
    status, account = await get_json(f"{worker.url}/accounts/{payee}")
    assert account["balances"] == {"1": {"available": 60, "locked": 0}}
    rows = wait_db(cql, world, "balances", payee, 1)
    assert [(r.available, r.locked) for r in rows] == [(60, 0)]
    payer_rows = wait_db(cql, world, "balance_events", payer, 3)
    assert [r.seq for r in payer_rows] == [3, 2, 1]


async def test_retried_op_id_is_applied_once(world: World, worker: Worker) -> None:
    user = fresh_user_id()
    body = {"op_id": "same", "kind": "deposit", "user_id": user, "asset": 1, "amount": 10}
    first = json.loads(await (await post(worker, body)).read())
    second = json.loads(await (await post(worker, body)).read())
    # and once more straight onto the topic, as a redelivery would
    await produce(world.topic("balance.operations"), [(user_key(user), json.dumps(body).encode())])
    assert first == second
    events = await user_events(world, user, 3)
    assert all(e == first for e in events)
    status, account = await get_json(f"{worker.url}/accounts/{user}")
    assert (account["seq"], account["balances"]["1"]["available"]) == (1, 10)


async def test_reused_op_id_with_other_content_is_a_conflict(worker: Worker) -> None:
    user = fresh_user_id()
    await post(worker, {"op_id": "x", "kind": "deposit", "user_id": user, "asset": 1, "amount": 10})
    response = await post(worker, {"op_id": "x", "kind": "deposit", "user_id": user, "asset": 1, "amount": 11})
    assert response.status == 409
    assert json.loads(await response.read())["field"] == "op_id"


async def test_poison_message_goes_to_dlq_and_next_is_processed(world: World, worker: Worker) -> None:
    user = fresh_user_id()
    key = user_key(user)
    good = {"op_id": "after-poison", "kind": "deposit", "user_id": user, "asset": 1, "amount": 5}
    await produce(world.topic("balance.operations"), [(key, b'{"op_id": oops'), (key, json.dumps(good).encode())])
    (event,) = await user_events(world, user, 1)
    assert (event["op_id"], event["status"]) == ("after-poison", "accepted")
    letters = await read_topic(
        world.topic("balance.operations.dlq"),
        lambda m: any(k == key and b"oops" in v for k, v in m),
    )
    letter = next(json.loads(v) for k, v in letters if k == key and b"oops" in v)
    assert letter["error"]["error"] == "invalid_json"


async def test_bad_http_input_is_a_4xx_naming_the_field(worker: Worker) -> None:
    user = fresh_user_id()
    cases = [
        (b"{not json", 400, None),
        (
            json.dumps({"op_id": "f", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1.5}).encode(),
            422,
            "amount",
        ),
        (json.dumps({"op_id": "f", "kind": "steal", "user_id": user, "asset": 1, "amount": 1}).encode(), 422, "kind"),
        (
            json.dumps({"op_id": "f", "kind": "deposit", "user_id": -1, "asset": 1, "amount": 1}).encode(),
            422,
            "user_id",
        ),
    ]
    for raw, status, field in cases:
        response = await post(worker, None, raw=raw)
        body = json.loads(await response.read())
        assert (response.status, body["field"]) == (status, field), body
    status, body = await get_json(f"{worker.url}/accounts/{user}")
    assert (status, body["error"]) == (404, "unknown_user")
    status, body = await get_json(f"{worker.url}/accounts/abc")
    assert (status, body["field"]) == (400, "user_id")


async def metric_samples(worker: Worker) -> Dict[str, float]:
    """The sample lines of /metrics (``name{labels} value``); ``# HELP`` and ``# TYPE`` lines name every
    metric whether or not it has samples, so only samples can show that something was counted."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, number = line.rpartition(" ")
            samples[series] = float(number)
    return samples


async def test_health_and_metrics_count_what_was_just_done(worker: Worker) -> None:
    before = await metric_samples(worker)
    user = fresh_user_id()
    deposit = await post(worker, {"op_id": "m-d", "kind": "deposit", "user_id": user, "asset": 1, "amount": 5})
    withdraw = await post(worker, {"op_id": "m-w", "kind": "withdraw", "user_id": user, "asset": 1, "amount": 9})
    assert (deposit.status, withdraw.status) == (200, 200)
    assert json.loads(await withdraw.read())["reason"] == "insufficient_funds"
    status, health = await get_json(f"{worker.url}/health")
    assert status == 200 and health["partitions"] == list(range(8))
    after = await metric_samples(worker)

    def moved(series: str) -> float:
        return after.get(series, 0) - before.get(series, 0)

    assert moved('ubscore_operations_total{kind="deposit",status="accepted"}') >= 1
    assert moved('ubscore_operations_total{kind="withdraw",status="rejected"}') >= 1
    assert moved('ubscore_http_requests_total{status="200",view="submit"}') >= 2
    assert moved('ubscore_http_requests_total{status="200",view="health"}') >= 1
