"""The gateway's abuse limits on its real server: bodies bounded by aiohttp.

The server is built as a worker builds it (GatewayWeb: the app's aiohttp
application and its runner), serves the app's views on a free port of
127.0.0.1, and is talked to over raw sockets, so every byte and every pause is
the test's. Kafka's producer and the owner of every user are stand-ins
(tests/agents/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, AsyncIterator, List, Optional

import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from app import app, faust_app, metrics
from app.settings import settings
from app.web import routing, views
from tests.raw_http import Client, request

from .conftest import Producer

LIMIT = settings.max_body_bytes
USER = 150


@pytest.fixture()
def producer(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> Producer:
    """Kafka as a recording stand-in; this worker owns every user; waits last a second at most."""
    producer = Producer()
    monkeypatch.setattr(test_app.producer, "send", producer.send)
    monkeypatch.setattr(routing, "owner_of", lambda user_id: URL("http://127.0.0.1:1"))
    monkeypatch.setattr(routing, "is_local", lambda owner: True)
    monkeypatch.setattr(views, "settings", dataclasses.replace(settings, wait_timeout_s=1.0))
    return producer


@pytest_asyncio.fixture()
async def gateway(producer: Producer) -> AsyncIterator[int]:
    """The port of a gateway built as the worker's is."""
    gateway = faust_app.GatewayWeb(app)
    for path, view in app.web.views.items():  # the views registered on the worker's own web at import
        gateway.route(path, view)
    runner = gateway._runner  # noqa: SLF001 - the runner the worker serves with
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
