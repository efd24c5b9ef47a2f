"""Routed reads and waits to an owner that serves https: through the gateway's own session, checked against the CA.

The views run as the gateway runs them (routed, forwarded); the owner is a real
https server on loopback. An owner whose certificate the CA file does not vouch
for, or that cannot be reached, is an unavailable dependency: 503, never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Dict, List, NamedTuple, Optional, Tuple

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from app.settings import load
from app.web import peers, routing, tls, waiting
from app.web.accounts import AccountView
from tests.tls_files import Pair, authority, gateway_cert, serving

USER = 21
READER = "Bearer a-readers-secret"


class Files(NamedTuple):
    ca: Pair
    owner: Pair
    impostor: Pair


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = authority(folder, "gateways-ca"), authority(folder, "other-ca")
    return Files(ca, gateway_cert(ca, folder, "owner"), gateway_cert(other, folder, "impostor"))


class Owner:
    """The worker that owns the user, elsewhere: what reached it, and an owner's answers."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, Optional[str]]] = []
        self.pages = web.Application()
        self.pages.router.add_route("*", "/{tail:.*}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, request.headers.get("Authorization")))
        if request.path.startswith("/operations/"):
            event = {"op_id": "w-1", "kind": "deposit", "user_id": USER, "status": "accepted", "seq": 1}
            return web.json_response(event)
        return web.json_response({"user_id": USER, "seq": 4, "balances": {}, "holds": []})


class Request:
    """What the routed views read of a request, and what forwarding sends on."""

    def __init__(self, url: str, authorization: str = READER) -> None:
        self.url = URL(url)
        self.path, self.query, self.method = self.url.path, self.url.query, "GET"
        self.headers: Dict[str, str] = {"Authorization": authorization}

    async def read(self) -> bytes:
        return b""


def owned_by(url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every user owned by the worker at ``url``."""
    monkeypatch.setattr(routing, "owner_of", lambda user_id: url)
    monkeypatch.setattr(routing, "is_local", lambda at: False)


@pytest.fixture()
async def trusting_peers(files: Files, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[aiohttp.ClientSession]:
    """The gateway's session to other workers, as a worker with the gateways' CA file has it."""
    session = tls.client_session(load({"UBS_WEB_TLS_CAFILE": str(files.ca.cert)}))
    monkeypatch.setattr(peers, "session", lambda: session)
    yield session
    await session.close()


def served(pair: Pair) -> Any:
    return tls.server_context(load({"UBS_WEB_TLS_CERTFILE": str(pair.cert), "UBS_WEB_TLS_KEYFILE": str(pair.key)}))


async def account(test_app: Any) -> Tuple[int, Dict[str, Any]]:
    response = await AccountView(test_app, test_app.web).get(
        Request(f"http://127.0.0.1:6066/accounts/{USER}"), str(USER)
    )
    return response.status, json.loads(response.body)


async def test_a_routed_read_reaches_an_https_owner_with_the_clients_own_key(
    test_app: Any, files: Files, trusting_peers: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = Owner()
    async with serving(owner.pages, served(files.owner)) as url:
        owned_by(url, monkeypatch)
        status, body = await account(test_app)
    assert (status, body["seq"]) == (200, 4), body
    assert owner.seen == [(f"/accounts/{USER}", READER)]


async def test_an_owner_whose_certificate_the_ca_does_not_vouch_for_is_a_503_naming_tls(
    test_app: Any,
    files: Files,
    trusting_peers: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    impostor = Owner()
    async with serving(impostor.pages, served(files.impostor)) as url:
        owned_by(url, monkeypatch)
        status, body = await account(test_app)
    assert (status, body["error"]) == (503, "owner_unavailable"), body
    assert f"({url})" in body["message"] and "TLS: its certificate was refused" in body["message"]
    assert impostor.seen == []  # the request, its key with it, never left the handshake
    (line,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("route_failed")]
    assert f"owner={url}" in line and "READER" not in line and "a-readers-secret" not in line


async def test_an_owner_that_cannot_be_reached_or_speaks_plain_http_is_a_503(
    test_app: Any, files: Files, trusting_peers: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = Owner()
    async with serving(owner.pages, None) as url:
        owned_by(url.with_scheme("https"), monkeypatch)  # no TLS behind the https URL
        status, body = await account(test_app)
        assert (status, body["error"]) == (503, "owner_unavailable") and "TLS: the handshake failed" in body["message"]
    owned_by(url.with_scheme("https"), monkeypatch)  # nobody there any more
    status, body = await account(test_app)
    assert (status, body["error"]) == (503, "owner_unavailable"), body


async def test_a_wait_asks_an_https_owner_and_gives_up_on_one_it_cannot_trust(
    test_app: Any,
    files: Files,
    trusting_peers: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner, impostor = Owner(), Owner()
    async with serving(owner.pages, served(files.owner)) as url:
        owned_by(url, monkeypatch)
        waited = await waiting.wait_result(USER, "w-1", 1.0, authorization=READER)
    assert waited.result is not None and waited.result["op_id"] == "w-1"
    assert owner.seen and owner.seen[0][0].startswith(f"/operations/{USER}/w-1?wait_s=")
    async with serving(impostor.pages, served(files.impostor)) as url:
        owned_by(url, monkeypatch)
        caplog.set_level(logging.WARNING)
        waited = await waiting.wait_result(USER, "w-2", 0.3, authorization=READER)
    assert waited.result is None and impostor.seen == []  # the view answers 504 result_timeout, as for any owner away
    assert any("TLS: its certificate was refused" in record.getMessage() for record in caplog.records)
