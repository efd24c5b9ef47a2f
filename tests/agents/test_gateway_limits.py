"""The gateway's abuse limits on its real server: bodies bounded by aiohttp, slow clients dropped, waits bounded.

The server is built as a worker builds it (GatewayWeb: the app's aiohttp
application, its runner and connections, app.web.limits) with small timeouts,
serves the app's views on a free port of 127.0.0.1, and is talked to over raw
sockets, so every byte and every pause is the test's. Kafka's producer and the
owner of every user are stand-ins (tests/agents/conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, AsyncIterator, Callable, List, Optional

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from app import app, faust_app
from app.observability import metrics
from app.settings import settings
from app.web import accounts, admission, operations, routing, waiting
from app.web.limits import GatewayRunner
from tests.raw_http import Answer, Client, request

from .conftest import Producer

HEADER_TIMEOUT_S = 0.3
BODY_TIMEOUT_S = 0.3
KEEPALIVE_TIMEOUT_S = 2.0
#: What a dropped connection may take beyond its deadline on a loaded test machine.
MARGIN_S = 0.7
LIMIT = settings.max_body_bytes
USER = 150


@pytest.fixture()
def producer(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> Producer:
    """Kafka as a recording stand-in; this worker owns every user; waits last a second at most."""
    producer = Producer()
    monkeypatch.setattr(test_app.producer, "send", producer.send)
    monkeypatch.setattr(routing, "owner_of", lambda user_id: URL("http://127.0.0.1:1"))
    monkeypatch.setattr(routing, "is_local", lambda owner: True)
    short = dataclasses.replace(settings, wait_timeout_s=1.0)
    monkeypatch.setattr(operations, "settings", short)
    monkeypatch.setattr(accounts, "settings", short)
    return producer


@pytest_asyncio.fixture()
async def gateway(producer: Producer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    """The port of a gateway built as the worker's is, with the timeouts above."""
    small = dataclasses.replace(
        settings,
        web_header_timeout_s=HEADER_TIMEOUT_S,
        web_body_timeout_s=BODY_TIMEOUT_S,
        web_keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
    )
    monkeypatch.setattr(faust_app, "settings", small)
    gateway = faust_app.GatewayWeb(app)
    for path, view in app.web.views.items():  # the views registered on the worker's own web at import
        gateway.route(path, view)
    runner = gateway._runner  # noqa: SLF001 - the runner the worker serves with
    assert isinstance(runner, GatewayRunner)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()


def deposit(op_id: str, size: Optional[int] = None) -> bytes:
    """A deposit's JSON, padded with spaces to ``size`` bytes when given."""
    raw = json.dumps({"op_id": op_id, "kind": "deposit", "user_id": USER, "asset": 1, "amount": 5}).encode()
    return raw if size is None else raw[:-1] + b" " * (size - len(raw)) + b"}"


def answered(view: str, status: int) -> float:
    return metrics.value("ubscore_http_requests_total", view=view, status=str(status))


def dropped(reason: str) -> float:
    return metrics.value("ubscore_http_connections_dropped_total", reason=reason)


def op_ids(producer: Producer) -> List[str]:
    return [json.loads(value)["op_id"] for _, value in producer.sent]


async def test_a_body_over_the_limit_is_a_json_413_with_or_without_a_length_and_the_connection_serves_on(
    gateway: int, producer: Producer
) -> None:
    refused = answered("submit", 413)
    client = await Client.to(gateway)
    for number, chunked in enumerate((False, True)):
        await client.send(request("POST", "/operations", deposit(f"big-{number}", 4 * LIMIT), chunked=chunked))
        status, headers, body = await client.answer()
        assert (status, body["error"], body["limit_bytes"]) == (413, "body_too_large", LIMIT), body
        assert headers["content-type"].startswith("application/json") and str(LIMIT) in body["message"]
        # The same connection carries the next request: a body of exactly the limit is taken.
        await client.send(request("POST", "/operations", deposit(f"at-limit-{number}", LIMIT), chunked=chunked))
        status, _, body = await client.answer()
        assert (status, body["op_id"]) == (202, f"at-limit-{number}"), body
    client.close()
    assert op_ids(producer) == ["at-limit-0", "at-limit-1"]
    assert answered("submit", 413) == refused + 2


async def test_a_body_that_cannot_be_decoded_is_a_400_never_a_500(gateway: int, producer: Producer) -> None:
    failed = answered("submit", 500)
    client = await Client.to(gateway)
    await client.send(request("POST", "/operations", b"not gzip at all", headers="Content-Encoding: gzip\r\n"))
    status, _, body = await client.answer()
    assert (status, body["error"]) == (400, "invalid_body"), body
    client.close()
    assert producer.sent == [] and answered("submit", 500) == failed


async def test_a_client_sending_its_headers_a_byte_at_a_time_is_dropped_at_the_header_timeout(
    gateway: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.web.limits")
    before = dropped("header_timeout")
    client = await Client.to(gateway)
    started = time.monotonic()
    dripping = asyncio.create_task(client.drip(b"GET /assets HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 500, 0.02))
    elapsed = await client.closed_after(started)
    dripping.cancel()
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + MARGIN_S
    assert dropped("header_timeout") == before + 1
    assert any(r.getMessage().startswith("http_client_dropped reason=header_timeout") for r in caplog.records)


async def test_a_connection_that_sends_nothing_is_dropped_at_the_header_timeout(gateway: int) -> None:
    client = await Client.to(gateway)
    elapsed = await client.closed_after(time.monotonic())
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + MARGIN_S


async def test_an_idle_keep_alive_connection_lasts_the_keep_alive_timeout_and_no_longer(gateway: int) -> None:
    client = await Client.to(gateway)
    await client.send(request("GET", "/assets"))
    assert (await client.answer())[0] == 200
    # Idle for longer than the header timeout: a keep-alive connection waits for its client.
    await asyncio.sleep(2 * HEADER_TIMEOUT_S)
    await client.send(request("GET", "/assets"))
    assert (await client.answer())[0] == 200
    elapsed = await client.closed_after(time.monotonic())
    assert KEEPALIVE_TIMEOUT_S - 0.1 <= elapsed < KEEPALIVE_TIMEOUT_S + MARGIN_S


async def test_the_header_timeout_of_a_later_request_counts_from_its_first_byte(gateway: int) -> None:
    client = await Client.to(gateway)
    await client.send(request("GET", "/assets"))
    assert (await client.answer())[0] == 200
    await asyncio.sleep(2 * HEADER_TIMEOUT_S)
    started = time.monotonic()
    dripping = asyncio.create_task(client.drip(b"GET /assets HTTP/1.1\r\nX-Slow: " + b"a" * 500, 0.02))
    elapsed = await client.closed_after(started)
    dripping.cancel()
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + MARGIN_S


async def test_a_client_sending_its_body_too_slowly_is_dropped_and_nothing_is_submitted(
    gateway: int, producer: Producer, caplog: pytest.LogCaptureFixture
) -> None:
    before, failed = dropped("body_timeout"), answered("submit", 500)
    body = deposit("slow-body")
    client = await Client.to(gateway)
    await client.send(request("POST", "/operations", body)[: -len(body) + 5])  # the headers and 5 bytes
    started = time.monotonic()
    dripping = asyncio.create_task(client.drip(body[5:], 0.1))
    elapsed = await client.closed_after(started)
    dripping.cancel()
    assert BODY_TIMEOUT_S - 0.05 <= elapsed < BODY_TIMEOUT_S + MARGIN_S
    assert dropped("body_timeout") == before + 1
    await until(lambda: answered("submit", 499) > 0)  # the view saw its client go; nobody hears the answer
    assert producer.sent == [] and answered("submit", 500) == failed
    assert not [r for r in caplog.records if r.getMessage().startswith("http_error")]


async def test_a_malformed_chunk_cannot_hold_a_request_past_the_body_timeout(gateway: int, producer: Producer) -> None:
    """aiohttp leaves a body whose chunk size is garbage unfinished: the body timeout ends it."""
    client = await Client.to(gateway)
    await client.send(request("POST", "/operations", b"", chunked=True)[: -len(b"0\r\n\r\n")] + b"3\r\n{}\n\r\n")
    await asyncio.sleep(0.05)
    await client.send(b"zz\r\n")
    elapsed = await client.closed_after(time.monotonic())
    assert elapsed < BODY_TIMEOUT_S + MARGIN_S
    assert producer.sent == []


async def test_a_client_slow_within_the_limits_is_served(gateway: int, producer: Producer) -> None:
    body = deposit("slow-but-on-time")
    whole = request("POST", "/operations", body)
    head, pieces = whole[: -len(body)], [whole[-len(body) :][:10], whole[-len(body) :][10:]]
    client = await Client.to(gateway)
    for start in range(0, len(head), len(head) // 3 + 1):
        await client.send(head[start : start + len(head) // 3 + 1])
        await asyncio.sleep(HEADER_TIMEOUT_S / 6)
    for piece in pieces:
        await client.send(piece)
        await asyncio.sleep(BODY_TIMEOUT_S / 4)
    status, _, answer = await client.answer()
    assert (status, answer["op_id"]) == (202, "slow-but-on-time")
    client.close()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling what a view does meanwhile
            await asyncio.sleep(0.01)


async def fetch(http: aiohttp.ClientSession, port: int, method: str, path: str, body: Any = None) -> Answer:
    data = None if body is None else json.dumps(body)
    async with http.request(method, f"http://127.0.0.1:{port}{path}", data=data) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_waits_beyond_the_limit_are_refused_at_once_with_retry_after(
    gateway: int, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "waits", admission.Slots(2))
    refused_reads, refused_submits = answered("result", 503), answered("submit", 503)
    submit = json.loads(deposit("w-submit"))
    async with aiohttp.ClientSession() as http:
        reads = [
            asyncio.create_task(fetch(http, gateway, "GET", f"/operations/{USER}/w-{n}?wait_s=1")) for n in range(2)
        ]
        await until(lambda: waiting.waits.held == 2)
        assert metrics.value("ubscore_http_waiting_requests") == 2
        status, headers, body = await fetch(http, gateway, "GET", f"/operations/{USER}/w-3?wait_s=1")
        assert (status, body["error"], body["field"], headers["Retry-After"]) == (503, "overloaded", None, "1")
        # A submit that would wait is refused before it is produced: the client retries with the same op_id.
        status, headers, body = await fetch(http, gateway, "POST", "/operations?wait=true", submit)
        assert (status, body["error"], body["op_id"], headers["Retry-After"]) == (503, "overloaded", "w-submit", "1")
        assert "nothing was submitted" in body["message"] and producer.sent == []
        # What does not wait needs no slot.
        assert (await fetch(http, gateway, "GET", f"/operations/{USER}/w-3"))[0] == 404
        assert (await fetch(http, gateway, "POST", "/operations", submit))[0] == 202
        assert [answer[0] for answer in await asyncio.gather(*reads)] == [404, 404]
        assert waiting.waits.held == 0 and metrics.value("ubscore_http_waiting_requests") == 0
        # Free again: the next wait is admitted, and times out as no ledger writes its result.
        assert (await fetch(http, gateway, "POST", "/operations?wait=true", json.loads(deposit("w-later"))))[0] == 504
    assert answered("result", 503) == refused_reads + 1 and answered("submit", 503) == refused_submits + 1
    assert op_ids(producer) == ["w-submit", "w-later"]


class BusyOwner:
    """The user's owner, elsewhere, with no wait slot free: a look is answered, a wait refused."""

    def __init__(self) -> None:
        self.asked: List[str] = []
        self.app = web.Application()
        self.app.router.add_get("/operations/{user_id}/{op_id}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        wait_s = float(request.query.get("wait_s", "0"))
        self.asked.append(request.query.get("wait_s", "0"))
        if wait_s > 0:
            body = {"error": "overloaded", "field": None, "message": "too many requests are waiting"}
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        return web.json_response({"error": "unknown_operation", "field": "op_id", "message": "none"}, status=404)


async def test_a_wait_the_owner_turns_away_is_answered_overloaded_at_once(
    gateway: int, producer: Producer, test_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = BusyOwner()
    async with TestServer(owner.app) as served, aiohttp.ClientSession() as http:
        monkeypatch.setattr(routing, "owner_of", lambda user_id: URL(str(served.make_url("/"))))
        monkeypatch.setattr(routing, "is_local", lambda url: False)
        monkeypatch.setattr(test_app, "http_client", http)
        started = time.monotonic()
        status, headers, body = await fetch(http, gateway, "POST", "/operations?wait=true", json.loads(deposit("t-1")))
        assert (status, body["error"], body["op_id"], headers["Retry-After"]) == (503, "overloaded", "t-1", "1")
        assert "in Kafka" in body["message"] and op_ids(producer) == ["t-1"]
        # A look at once, the wait refused: then no more asking, long before the wait's timeout.
        assert len(owner.asked) == 2 and time.monotonic() - started < 1.0
