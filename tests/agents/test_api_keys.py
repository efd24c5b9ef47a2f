"""API keys on the gateway's own aiohttp server, with no broker: every route, every refusal, nothing produced.

The requests go through the app's real web application (its routes, views and
decorators); Kafka's producer, the database and the other worker are stand-ins
that record what reaches them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.web import View
from prometheus_client import REGISTRY, generate_latest
from yarl import URL

from app import app
from app.core.assets import Asset
from app.observability.log_format import event_fields
from app.settings import load, settings
from app.sink.service import store
from app.web import access, accounts, asset_views, operations, peers, routing
from app.web.auth import digest

from .conftest import Producer

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEYS = {
    "writer": ("writer-secret-3f9a", ["operations:write"], [[100, 199]]),
    "reader": ("reader-secret-77c1", ["accounts:read"], [[100, 199]]),
    "ops": ("operator-secret-a0d2", ["operator"], [[100, 199]]),
    "scraper": ("metrics-secret-51be", ["metrics:read"], None),
    "registrar": ("assets-secret-c4e0", ["assets:write"], None),
}
TOKEN = "token-secret-9d8e"
SECRETS = [secret for secret, _, _ in KEYS.values()] + [TOKEN]
INSIDE, OUTSIDE = 150, 500


def deposit(user: int, op_id: str = "d-1") -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": 5}


BTC = {"asset": 1, "code": "BTC", "scale": 8}
#: Every route that needs a key: method, path (user INSIDE), body, and the scope it needs (None: any key).
ROUTES: List[Tuple[str, str, Any, Optional[str]]] = [
    ("POST", "/operations", deposit(INSIDE), "operations:write"),
    ("POST", "/operations?wait=true", deposit(INSIDE), "operations:write"),
    ("POST", "/operations?replay=2:7", deposit(INSIDE), "operator"),
    ("GET", f"/operations/{INSIDE}/d-1", None, "accounts:read"),
    ("GET", f"/accounts/{INSIDE}", None, "accounts:read"),
    ("GET", f"/accounts/{INSIDE}/holds", None, "accounts:read"),
    ("GET", f"/accounts/{INSIDE}/events", None, "accounts:read"),
    ("GET", "/assets", None, None),
    ("GET", "/assets/1", None, None),
    ("POST", "/assets", BTC, "assets:write"),
    ("GET", "/metrics", None, "metrics:read"),
]
USER_ROUTES = [route for route in ROUTES if route[1].startswith(("/operations", "/accounts"))]


def bearer(secret: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def secret_of(name: str) -> str:
    return KEYS[name][0]


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    entries = []
    for key_id, (secret, scopes, users) in KEYS.items():
        ranges = {"users": users} if users else {}
        entries.append({"id": key_id, "sha256": digest(secret), "scopes": scopes, **ranges})
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": entries}))
    return path


@pytest.fixture()
def keyed(key_file: Path, test_app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Producer]:
    """The keys in force, this worker owning every user, a recording producer and no database."""
    access.reload(load({"UBS_API_KEYS_FILE": str(key_file), "UBS_API_TOKEN": TOKEN}))
    producer = Producer()
    monkeypatch.setattr(test_app.producer, "send", producer.send)
    monkeypatch.setattr(routing, "owner_of", lambda user_id: URL("http://127.0.0.1:1"))
    monkeypatch.setattr(routing, "owner_of_partition", lambda partition: URL("http://127.0.0.1:1"))
    monkeypatch.setattr(routing, "is_local", lambda owner: True)

    async def no_history(user_id: int, limit: int) -> List[Dict[str, Any]]:
        return []

    async def read_back(asset_id: int) -> Any:
        return Asset(**BTC)

    monkeypatch.setattr(store, "events", no_history)
    short = dataclasses.replace(settings, wait_timeout_s=0.2)
    monkeypatch.setattr(operations, "settings", short)
    monkeypatch.setattr(accounts, "settings", short)
    monkeypatch.setattr(asset_views, "_read_back", read_back)
    try:
        yield producer
    finally:
        access.reload(settings)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client() -> AsyncIterator[TestClient]:
    """The app's own web application, served on a free port; Faust's pages applied as a worker applies them."""
    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as served:
        yield served


async def call(
    client: TestClient, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Any, Any]:
    data = None if body is None else json.dumps(body)
    async with client.request(method, path, data=data, headers=headers or {}) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text), response.headers
        except ValueError:
            return response.status, text, response.headers


@pytest.mark.parametrize("method, path, body, scope", ROUTES)
async def test_every_route_refuses_a_request_without_a_valid_key(
    client: TestClient, keyed: Producer, method: str, path: str, body: Any, scope: Optional[str]
) -> None:
    for headers in ({}, bearer("not-a-key"), {"Authorization": secret_of("writer")}, {"Authorization": "Basic x"}):
        status, answer, sent_headers = await call(client, method, path, body, headers)
        assert (status, answer["error"]) == (401, "unauthorized"), (headers, answer)
        assert sent_headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.sent == []


@pytest.mark.parametrize("method, path, body, scope", [route for route in ROUTES if route[3] is not None])
async def test_a_key_without_the_scope_is_refused_naming_it(
    client: TestClient, keyed: Producer, method: str, path: str, body: Any, scope: Optional[str]
) -> None:
    lacking = "registrar" if scope != "assets:write" else "scraper"
    status, answer, _ = await call(client, method, path, body, bearer(secret_of(lacking)))
    assert (status, answer["error"], answer["scope"]) == (403, "forbidden", scope)
    assert "user_id" not in answer
    assert keyed.sent == []


@pytest.mark.parametrize("method, path, body, scope", USER_ROUTES)
async def test_a_key_whose_users_exclude_the_user_is_refused_naming_the_user(
    client: TestClient, keyed: Producer, method: str, path: str, body: Any, scope: Optional[str]
) -> None:
    name = {"operations:write": "writer", "accounts:read": "reader", "operator": "ops"}[scope or ""]
    path = path.replace(str(INSIDE), str(OUTSIDE))
    body = None if body is None else {**body, "user_id": OUTSIDE}
    status, answer, _ = await call(client, method, path, body, bearer(secret_of(name)))
    assert (status, answer["error"], answer["user_id"]) == (403, "forbidden", OUTSIDE)
    assert keyed.sent == []


TRADE = {
    "op_id": "fill-1",
    "kind": "trade",
    "user_id": INSIDE,
    "buyer": {"user_id": INSIDE, "hold_id": "bid-1"},
    "seller": {"user_id": INSIDE + 1, "hold_id": "ask-7"},
    "base_asset": 1,
    "quote_asset": 2,
    "base_amount": 20,
    "quote_amount": 400,
}


@pytest.mark.parametrize(
    "body",
    [
        {**deposit(INSIDE), "kind": "transfer", "to_user_id": OUTSIDE},
        {**TRADE, "seller": {"user_id": OUTSIDE, "hold_id": "ask-7"}},
        {**TRADE, "buyer_fee": 1, "fee_account": OUTSIDE},
    ],
)
async def test_every_user_an_operation_names_must_be_in_the_keys_ranges(
    client: TestClient, keyed: Producer, body: Dict[str, Any]
) -> None:
    status, answer, _ = await call(client, "POST", "/operations", body, bearer(secret_of("writer")))
    assert (status, answer["user_id"]) == (403, OUTSIDE)
    assert keyed.sent == []


async def test_a_key_with_the_scope_for_the_users_is_served(client: TestClient, keyed: Producer) -> None:
    writer, reader = bearer(secret_of("writer")), bearer(secret_of("reader"))
    transfer = {**deposit(INSIDE, "t-1"), "kind": "transfer", "to_user_id": INSIDE + 49}
    assert (await call(client, "POST", "/operations", transfer, writer))[0] == 202
    status, answer, _ = await call(client, "POST", "/operations", deposit(199, "d-2"), writer)
    assert (status, answer) == (202, {"op_id": "d-2", "status": "submitted"})
    ops = bearer(secret_of("ops"))
    assert (await call(client, "POST", "/operations?replay=0:3", deposit(100, "d-3"), ops))[0] == 202
    status, answer, _ = await call(client, "POST", "/operations?replay=x", deposit(100, "d-4"), ops)
    assert (status, answer["field"]) == (400, "replay")
    assert len(keyed.sent) == 3
    assert (await call(client, "GET", f"/accounts/{INSIDE}", None, reader))[0] == 404  # no account: but served
    assert (await call(client, "GET", f"/accounts/{INSIDE}/holds", None, reader))[0] == 200
    assert (await call(client, "GET", f"/accounts/{INSIDE}/events", None, reader))[0] == 200
    for who in (reader, writer, bearer(secret_of("ops"))):  # who may submit may read the answer
        assert (await call(client, "GET", f"/operations/{INSIDE}/t-1", None, who))[0] == 404
    assert (await call(client, "GET", "/assets", None, bearer(secret_of("scraper"))))[0] == 200
    assert (await call(client, "POST", "/assets", BTC, bearer(secret_of("registrar"))))[0] == 201
    status, text, _ = await call(client, "GET", "/metrics", None, bearer(secret_of("scraper")))
    assert status == 200 and "ubscore_http_requests_total" in text


async def test_the_token_is_a_key_with_every_scope_for_every_user(client: TestClient, keyed: Producer) -> None:
    for method, path, body, _ in ROUTES:
        path, body = path.replace(str(INSIDE), str(OUTSIDE)), body if body is None else {**body, "user_id": OUTSIDE}
        status, answer, _ = await call(client, method, path, body, bearer(TOKEN))
        assert status not in (401, 403), (path, answer)


async def test_health_needs_no_key(client: TestClient, keyed: Producer) -> None:
    status, answer, _ = await call(client, "GET", "/health")
    assert status in (200, 503) and "status" in answer


@pytest.mark.parametrize(
    "path", ["/", "/router/", "/table/", "/table/accounts/1/", "/graph/", "/assignment/", "/performance/", "/stats/"]
)
async def test_fausts_own_pages_are_not_served(client: TestClient, keyed: Producer, path: str) -> None:
    """Table contents, the cluster's layout, statistics: none of them would ask for a key."""
    assert (await call(client, "GET", path, None, bearer(TOKEN)))[0] == 404


async def test_every_handler_but_healths_requires_a_key() -> None:
    """A view added without ``requires`` fails here, not open in production."""
    unguarded = []
    for path, view in app.web.views.items():
        for name in ("get", "post", "put", "patch", "delete"):
            handler = getattr(type(view), name)
            if handler is not getattr(View, name) and not hasattr(handler, "required_scopes"):
                unguarded.append((name.upper(), path))
    assert unguarded == [("GET", "/health")]


class Owner:
    """The worker that owns the users, elsewhere: records what reaches it and answers as an owner would."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, Optional[str]]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization")))
        if request.path.startswith("/operations/"):
            event = {**deposit(INSIDE, "w-1"), "status": "accepted", "counterparty": None, "hold_id": None, "seq": 1}
            return web.json_response(event)
        return web.json_response({"user_id": INSIDE, "seq": 0, "balances": {}, "holds": []})


@pytest_asyncio.fixture(loop_scope="module")
async def owner(keyed: Producer, test_app: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Owner]:
    """Every user owned by another worker, which this one reaches over HTTP."""
    elsewhere = Owner()
    async with TestServer(elsewhere.app) as served, aiohttp.ClientSession() as http:
        url = URL(str(served.make_url("/")))
        monkeypatch.setattr(routing, "owner_of", lambda user_id: url)
        monkeypatch.setattr(routing, "is_local", lambda owner: False)
        monkeypatch.setattr(peers, "session", lambda: http)
        yield elsewhere


async def test_a_routed_read_is_refused_before_it_is_forwarded(client: TestClient, owner: Owner) -> None:
    for headers in ({}, bearer("not-a-key"), bearer(secret_of("writer"))):
        assert (await call(client, "GET", f"/accounts/{INSIDE}", None, headers))[0] in (401, 403)
    assert (await call(client, "GET", f"/accounts/{OUTSIDE}", None, bearer(secret_of("reader"))))[0] == 403
    assert owner.seen == []


async def test_a_routed_read_carries_the_clients_own_key_to_the_owner(client: TestClient, owner: Owner) -> None:
    reader = bearer(secret_of("reader"))
    status, answer, _ = await call(client, "GET", f"/accounts/{INSIDE}/holds", None, reader)
    assert status == 200, answer
    assert owner.seen == [(f"/accounts/{INSIDE}/holds", reader["Authorization"])]


async def test_a_wait_asks_the_owner_with_the_clients_own_key(client: TestClient, owner: Owner) -> None:
    writer = bearer(secret_of("writer"))
    status, answer, _ = await call(client, "POST", "/operations?wait=true", deposit(INSIDE, "w-1"), writer)
    assert (status, answer["status"]) == (200, "accepted")
    assert owner.seen and all(seen == (f"/operations/{INSIDE}/w-1", writer["Authorization"]) for seen in owner.seen)


async def test_a_secret_reaches_no_log_no_metric_and_no_answer(
    client: TestClient, keyed: Producer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each key presented, right or wrong, to every route: the secret shows nowhere, the key's id does."""
    caplog.set_level(logging.DEBUG)
    answers = []
    for secret in [*SECRETS, "wrong-" + TOKEN]:
        for method, path, body, _ in ROUTES:
            status, answer, headers = await call(client, method, path, body, bearer(secret))
            answers.append(json.dumps(answer) + json.dumps(dict(headers)))
    seen = caplog.text + generate_latest(REGISTRY).decode() + "".join(answers)
    for secret in SECRETS:
        assert secret not in seen and digest(secret) not in seen
    audit = [record.getMessage() for record in caplog.records if record.getMessage().startswith("audit ")]
    assert any("key_id=writer" in line and "op_id=d-1" in line and "status=202" in line for line in audit), audit
    assert any(
        "route=/assets key_id=registrar op_id=None" in line and "asset=1" in line and "status=201" in line
        for line in audit
    )
    assert any("route=/assets key_id=writer" in line and "status=403" in line for line in audit)
    assert any("key_id=None" in line and "status=401" in line for line in audit)
    assert all("remote=127.0.0.1" in line for line in audit)
    first = next(record for record in caplog.records if record.getMessage().startswith("audit "))
    assert set(event_fields(first.msg, first.args) or {}) == {
        "event",
        "method",
        "route",
        "key_id",
        "op_id",
        "asset",
        "replay",
        "remote",
        "forwarded_for",
        "status",
    }  # one value per field, in text and in JSON alike
