"""The gateway's guards on a worker started with a token, a small body limit and short client timeouts.

Every route but /health needs the bearer token (a key with every scope, app.web.auth);
bodies beyond UBS_MAX_BODY_BYTES are refused
before they are parsed, however they are sent; nothing a client sends, through the view or the public
topic, can be a credit leg. A refused request changes nothing. Clients too slow with
their headers or body are disconnected, idle connections closed, and waits beyond
UBS_WEB_MAX_WAITERS refused (app.web.limits, app.web.admission), while the gateway serves on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from app.partitioning import user_key
from tests.raw_http import Client, request

from .harness import PARTITIONS, Worker, World, events_of, fresh_user_id, produce, read_topic

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
LIMIT = 1024
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEPALIVE_TIMEOUT_S = 4.0
MAX_WAITERS = 2
#: What a disconnection may take beyond its deadline on a loaded machine.
MARGIN_S = 2.0
DROPPED = "ubscore_http_connections_dropped_total"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("guarded")
    env = {
        "UBS_API_TOKEN": TOKEN,
        "UBS_MAX_BODY_BYTES": str(LIMIT),
        "UBS_WEB_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "UBS_WEB_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "UBS_WEB_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S),
        "UBS_WEB_MAX_WAITERS": str(MAX_WAITERS),
    }
    worker = Worker(World(), base / "data", base / "worker.log", extra_env=env).start()
    try:
        worker.wait_ready(PARTITIONS)
        yield worker
    finally:
        worker.stop()


async def submit(
    worker: Worker, body: Any, token: Optional[str] = TOKEN, raw: Optional[bytes] = None
) -> Tuple[int, Dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{worker.url}/operations?wait=true", data=data, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def account(worker: Worker, user: int, token: Optional[str] = TOKEN) -> Tuple[int, Dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/accounts/{user}", headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def op_ids_on_topic(worker: Worker, user: int) -> List[str]:
    """The op_ids of the user's messages on balance.operations, read to its current end.

    An account that is still missing proves nothing (a refused request could have been
    produced and not applied yet); the topic after a later acknowledged write does.
    """
    messages = await read_topic(worker.world.topic("balance.operations"))
    return [json.loads(value)["op_id"] for key, value in messages if key == user_key(user)]


def deposit(user: int, op_id: str, amount: int = 10) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": amount}


async def test_writes_need_the_bearer_token(guarded: Worker) -> None:
    user = fresh_user_id()
    for number, token in enumerate((None, "", "wrong", TOKEN + "x", TOKEN.upper())):
        status, body = await submit(guarded, deposit(user, f"refused-{number}"), token=token)
        assert (status, body["error"]) == (401, "unauthorized"), (token, body)
    status, body = await submit(guarded, deposit(user, "d1"))
    # Had a refused deposit been produced, it would be ahead of d1 on the user's partition.
    assert (status, body["status"], body["available"], body["seq"]) == (200, "accepted", 10, 1)
    assert await op_ids_on_topic(guarded, user) == ["d1"]
    # Reads need it too: balances are nobody else's business.
    assert (await account(guarded, user, token=None))[0] == 401
    status, body = await account(guarded, user)
    assert status == 200 and body["balances"]["1"]["available"] == 10


async def test_bodies_beyond_the_limit_are_refused_unread(guarded: Worker) -> None:
    user = fresh_user_id()
    padded = deposit(user, "big")
    padded["op_id"] = "x" * 60  # still a valid op_id; the padding below makes the body too long
    raw = json.dumps(padded).encode()
    raw = raw[:-1] + b"," + b" " * (LIMIT - len(raw)) + b"}"
    assert len(raw) > LIMIT
    status, body = await submit(guarded, None, raw=raw)
    assert (status, body["error"]) == (413, "body_too_large"), body
    status, body = await submit(guarded, deposit(user, "after-big"))
    assert (status, body["seq"]) == (200, 1)
    assert await op_ids_on_topic(guarded, user) == ["after-big"]


async def test_no_credit_leg_through_the_view_or_the_public_topic(guarded: Worker) -> None:
    user = fresh_user_id()
    forged = [
        ({"op_id": "f1", "kind": "transfer_in", "user_id": user, "asset": 1, "amount": 10**6}, "kind"),
        ({"op_id": "f2", "kind": "credit", "user_id": user, "asset": 1, "amount": 10**6}, "kind"),
        ({**deposit(user, "f3"), "credit": 10**6}, "credit"),
        ({**deposit(user, "f4"), "counterparty": 1}, "counterparty"),
    ]
    for body, field in forged:
        status, answer = await submit(guarded, body)
        assert (status, answer["field"]) == (422, field), answer

    # The same bodies straight onto balance.operations: rejected with a reason, dead-lettered.
    world = guarded.world
    await produce(world.topic("balance.operations"), [(user_key(user), json.dumps(b).encode()) for b, _ in forged])
    messages = await read_topic(world.topic("balance.events"), lambda m: len(events_of(m, [user])) >= len(forged))
    events = events_of(messages, [user])
    assert [(e["op_id"], e["status"]) for e in events] == [(b["op_id"], "rejected") for b, _ in forged]
    # Only the copies produced straight to the topic are there: the view produced none of its own
    # (they would have been deduplicated by op_id, so the events alone cannot show it).
    assert await op_ids_on_topic(guarded, user) == [b["op_id"] for b, _ in forged]
    status, body = await account(guarded, user)
    assert (status, body["seq"], body["balances"]) == (200, len(forged), {}), body


def authorized() -> str:
    return f"Authorization: Bearer {TOKEN}\r\n"


def port_of(worker: Worker) -> int:
    port = URL(worker.url).port
    assert port is not None
    return port


async def metric(worker: Worker, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics (0 when it has none)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            text = await response.text()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return next((sample.value for sample in samples if (sample.name, sample.labels) == (name, labels)), 0.0)


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 256):
        yield body[start : start + 256]


async def test_a_chunked_body_beyond_the_limit_is_a_json_413_and_a_broken_one_a_400(guarded: Worker) -> None:
    user = fresh_user_id()
    raw = json.dumps(deposit(user, "chunked-big")).encode()
    raw = raw[:-1] + b" " * (4 * LIMIT) + b"}"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        # aiohttp's client sends a body it reads from an iterator chunked, without a Content-Length.
        async with http.post(f"{guarded.url}/operations?wait=true", data=chunks(raw), headers=headers) as response:
            body = await response.json(content_type=None)
            assert (response.status, body["error"], body["limit_bytes"]) == (413, "body_too_large", LIMIT), body
        broken = {**headers, "Content-Encoding": "gzip"}
        async with http.post(f"{guarded.url}/operations", data=b"not gzip", headers=broken) as response:
            body = await response.json(content_type=None)
            assert (response.status, body["error"]) == (400, "invalid_body"), body
    status, body = await submit(guarded, deposit(user, "after-chunked"))
    assert (status, body["seq"]) == (200, 1)
    assert await op_ids_on_topic(guarded, user) == ["after-chunked"]
    assert await metric(guarded, "ubscore_http_requests_total", view="submit", status="500") == 0


async def test_slow_clients_are_disconnected_and_the_gateway_serves_on(guarded: Worker) -> None:
    port = port_of(guarded)
    headers_before = await metric(guarded, DROPPED, reason="header_timeout")
    bodies_before = await metric(guarded, DROPPED, reason="body_timeout")
    user = fresh_user_id()

    async def slowloris() -> float:
        client = await Client.to(port)
        started = time.monotonic()
        dripping = asyncio.create_task(client.drip(b"GET /assets HTTP/1.1\r\nX-Slow: " + b"a" * 1000, 0.05))
        try:
            return await client.closed_after(started)
        finally:
            dripping.cancel()

    async def silent() -> float:
        return await (await Client.to(port)).closed_after(time.monotonic())

    async def slow_body() -> float:
        body = json.dumps(deposit(user, "slow-body")).encode()
        client = await Client.to(port)
        await client.send(request("POST", "/operations", body, headers=authorized())[: -len(body) + 5])
        started = time.monotonic()
        dripping = asyncio.create_task(client.drip(body[5:], 0.2))
        try:
            return await client.closed_after(started)
        finally:
            dripping.cancel()

    many = [slowloris() for _ in range(20)] + [silent() for _ in range(20)] + [slow_body() for _ in range(5)]
    elapsed = await asyncio.gather(*many)
    for seconds in elapsed[:40]:
        assert HEADER_TIMEOUT_S - 0.1 <= seconds < HEADER_TIMEOUT_S + MARGIN_S
    for seconds in elapsed[40:]:
        assert BODY_TIMEOUT_S - 0.1 <= seconds < BODY_TIMEOUT_S + MARGIN_S
    assert await metric(guarded, DROPPED, reason="header_timeout") >= (headers_before + 40)
    assert await metric(guarded, DROPPED, reason="body_timeout") == bodies_before + 5
    status, body = await submit(guarded, deposit(user, "after-slow"))
    assert (status, body["seq"]) == (200, 1)
    assert await op_ids_on_topic(guarded, user) == ["after-slow"]


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(guarded: Worker) -> None:
    client = await Client.to(port_of(guarded))
    await client.send(request("GET", "/health"))
    assert (await client.answer())[0] == 200
    await asyncio.sleep(2 * HEADER_TIMEOUT_S)  # idle longer than a request's headers may take: still open
    await client.send(request("GET", "/health"))
    assert (await client.answer())[0] == 200
    elapsed = await client.closed_after(time.monotonic())
    assert KEEPALIVE_TIMEOUT_S - 0.2 <= elapsed < KEEPALIVE_TIMEOUT_S + MARGIN_S


async def test_waits_beyond_the_limit_are_refused_with_retry_after_and_submit_nothing(guarded: Worker) -> None:
    user = fresh_user_id()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def read(path: str) -> Tuple[int, Dict[str, str], Dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{guarded.url}{path}", headers=headers) as response:
                return response.status, dict(response.headers), await response.json(content_type=None)

    waiting = [asyncio.create_task(read(f"/operations/{user}/never-{n}?wait_s=4")) for n in range(MAX_WAITERS)]
    async with asyncio.timeout(10):
        while await metric(guarded, "ubscore_http_waiting_requests") < MAX_WAITERS:  # noqa: ASYNC110 - a metric
            await asyncio.sleep(0.05)
    status, answer_headers, body = await read(f"/operations/{user}/never-x?wait_s=4")
    assert (status, body["error"], answer_headers["Retry-After"]) == (503, "overloaded", "1"), body
    status, body = await submit(guarded, deposit(user, "w1"))
    assert (status, body["error"], body["op_id"]) == (503, "overloaded", "w1"), body
    assert (await read(f"/operations/{user}/never-x"))[0] == 404  # a look without a wait is served
    assert [answer[0] for answer in await asyncio.gather(*waiting)] == [404] * MAX_WAITERS
    status, body = await submit(guarded, deposit(user, "w1"))  # the same op_id again, now admitted
    assert (status, body["seq"]) == (200, 1)
    assert await op_ids_on_topic(guarded, user) == ["w1"]  # the refused submit produced nothing
