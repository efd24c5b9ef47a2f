"""API keys on the real stack: two workers sharing a key file, reads routed between them, a reload, a refusal.

Every request goes to worker ``a`` for users worker ``b`` owns, so every user
route is a routed read (or a wait that asks ``b``): ``a`` decides first, and
``b`` decides again on the client's own header. A refused request must leave
nothing on balance.operations (or balance.assets).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest

from app.exit_codes import ExitCode
from app.partitioning import partition_for, user_key
from app.web.auth import digest

from .harness import PARTITIONS, Worker, World, fresh_user_id, read_topic
from .test_scaling import wait_spread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = {
    "writer": ("it-writer-secret-1b7e", ["operations:write"]),
    "reader": ("it-reader-secret-90aa", ["accounts:read"]),
    "ops": ("it-operator-secret-4c21", ["operator"]),
    "scraper": ("it-metrics-secret-e3f0", ["metrics:read"]),
    "registrar": ("it-assets-secret-77d5", ["assets:write"]),
}
LATE = ("it-late-secret-0f3c", ["accounts:read"])
#: The users the keys cover: [BASE, BASE + SPAN]; users past it are covered by none.
BASE = fresh_user_id()
SPAN = 999


def bearer(name: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


def key_file(path: Path, keys: Dict[str, Tuple[str, List[str]]]) -> Path:
    entries = [
        {"id": key_id, "sha256": digest(secret), "scopes": scopes, "users": [[BASE, BASE + SPAN]]}
        for key_id, (secret, scopes) in keys.items()
    ]
    path.write_text(json.dumps({"keys": entries}))
    return path


class Pair:
    """Two workers of one world with the same key file; ``inside`` and ``outside`` are users ``b`` owns."""

    def __init__(self, world: World, a: Worker, b: Worker, keys: Path) -> None:
        self.world, self.a, self.b, self.keys = world, a, b, keys
        owned = set(b.health()["partitions"])  # type: ignore[index]
        self.inside = owned_user(owned, BASE, BASE + SPAN)
        self.outside = owned_user(owned, BASE + SPAN + 1, BASE + 10 * SPAN)


def owned_user(partitions: set, first: int, last: int) -> int:
    return next(u for u in range(first, last) if partition_for(user_key(u), PARTITIONS) in partitions)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("api-keys")
    keys = key_file(base / "keys.json", KEYS)
    world = World()
    env = {"UBS_API_KEYS_FILE": str(keys)}
    a = Worker(world, base / "a" / "data", base / "a.log", extra_env=env).start()
    b = Worker(world, base / "b" / "data", base / "b.log", extra_env=env).start()
    try:
        a.wait_ready()
        asyncio.run(wait_spread([a, b]))
        yield Pair(world, a, b, keys)
    finally:
        a.stop()
        b.stop()
        for worker in (a, b):
            print(f"\n--- {worker.log_path} ---\n{worker.tail(30)}")


async def call(
    method: str, url: str, body: Any = None, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, json=body, headers=headers or {}) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, {"text": text[:200]}


def deposit(user: int, op_id: str) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": 10}


def routes(user: int, op_id: str) -> List[Tuple[str, str, Any, Optional[str]]]:
    """Every route that needs a key: method, path, body, and the scope (None: any key)."""
    return [
        ("POST", "/operations", deposit(user, op_id), "operations:write"),
        ("POST", "/operations?wait=true", deposit(user, op_id), "operations:write"),
        ("POST", "/operations?replay=0:1", deposit(user, op_id), "operator"),
        ("GET", f"/operations/{user}/{op_id}", None, "accounts:read"),
        ("GET", f"/accounts/{user}", None, "accounts:read"),
        ("GET", f"/accounts/{user}/holds", None, "accounts:read"),
        ("GET", f"/accounts/{user}/events", None, "accounts:read"),
        ("GET", "/assets", None, None),
        ("GET", "/assets/77", None, None),
        ("POST", "/assets", {"asset": 77, "code": "REFUSED", "scale": 2}, "assets:write"),
        ("GET", "/metrics", None, "metrics:read"),
    ]


async def operations_of(world: World, users: List[int]) -> List[str]:
    """The op_ids of these users' messages on balance.operations, read to its current end."""
    messages = await read_topic(world.topic("balance.operations"))
    keys = {user_key(user) for user in users}
    return [json.loads(value)["op_id"] for key, value in messages if key in keys]


async def test_every_route_refuses_a_missing_or_wrong_key_a_missing_scope_and_a_user_out_of_range(
    pair: Pair,
) -> None:
    a, inside, outside = pair.a, pair.inside, pair.outside
    for method, path, body, scope in routes(inside, "refused-1"):
        for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": KEYS["writer"][0]}):
            status, answer = await call(method, f"{a.url}{path}", body, headers)
            assert (status, answer.get("error")) == (401, "unauthorized"), (path, headers, answer)
        if scope is not None:
            lacking = "scraper" if scope != "metrics:read" else "reader"
            status, answer = await call(method, f"{a.url}{path}", body, bearer(lacking))
            assert (status, answer.get("scope")) == (403, scope), (path, answer)
    for method, path, body, scope in routes(outside, "refused-2"):
        if path.startswith(("/operations", "/accounts")):
            name = {"operations:write": "writer", "accounts:read": "reader", "operator": "ops"}[scope or ""]
            status, answer = await call(method, f"{a.url}{path}", body, bearer(name))
            assert (status, answer.get("user_id")) == (403, outside), (path, answer)
    transfer = {**deposit(inside, "refused-3"), "kind": "transfer", "to_user_id": outside}
    assert (await call("POST", f"{a.url}/operations", transfer, bearer("writer")))[0] == 403
    # An acknowledged write after the refusals: had one been produced, it would be on the topic before it.
    status, answer = await call("POST", f"{a.url}/operations?wait=true", deposit(inside, "after"), bearer("writer"))
    assert (status, answer.get("status")) == (200, "accepted"), answer
    on_topic = await operations_of(pair.world, [inside, outside])
    assert "after" in on_topic and [op_id for op_id in on_topic if op_id.startswith("refused")] == [], on_topic
    status, registry = await call("GET", f"{a.url}/assets", None, bearer("reader"))
    assert status == 200 and all(asset["asset"] != 77 for asset in registry["assets"])


async def test_health_needs_no_key_and_fausts_pages_are_gone(pair: Pair) -> None:
    assert (await call("GET", f"{pair.a.url}/health"))[0] == 200
    for path in ("/", "/router/", "/table/", "/table/accounts/1/", "/graph/", "/performance/"):
        assert (await call("GET", f"{pair.a.url}{path}", None, bearer("reader")))[0] == 404, path


async def test_routed_reads_and_waits_are_decided_again_by_the_owner(pair: Pair) -> None:
    a, b, inside = pair.a, pair.b, pair.inside
    status, answer = await call("POST", f"{a.url}/operations?wait=true", deposit(inside, "routed"), bearer("writer"))
    assert (status, answer.get("status")) == (200, "accepted"), answer  # b answered a's lookup: the writer's key
    status, account = await call("GET", f"{a.url}/accounts/{inside}", None, bearer("reader"))
    assert status == 200 and account["balances"]["1"]["available"] >= 10, account
    assert (await call("GET", f"{a.url}/operations/{inside}/routed", None, bearer("reader")))[0] == 200
    # The owner alone stops knowing the reader: a still lets it through, b refuses what a forwards.
    without_reader = {name: key for name, key in KEYS.items() if name != "reader"}
    key_file(pair.keys, without_reader)
    try:
        await reload(b, "api_keys_reloaded")
        status, answer = await call("GET", f"{a.url}/accounts/{inside}", None, bearer("reader"))
        assert (status, answer.get("error")) == (401, "unauthorized"), answer
        assert (await call("GET", f"{a.url}/assets", None, bearer("reader")))[0] == 200  # a itself still knows it
    finally:
        key_file(pair.keys, KEYS)
        await reload(b, "api_keys_reloaded")


async def test_sighup_reads_the_keys_again_and_a_bad_file_keeps_them(pair: Pair) -> None:
    a, inside = pair.a, pair.inside
    late = {"Authorization": f"Bearer {LATE[0]}"}
    assert (await call("GET", f"{a.url}/accounts/{inside}", None, late))[0] == 401
    pair.keys.write_text('{"keys": [{"id": "broken", "sha256": "not-hex", "scopes": ["operator"]}]}')
    try:
        line = await reload(a, "api_keys_reload_failed")
        assert str(pair.keys) in line and "sha256 must be 64 hex digits" in line and "kept=" in line
        assert (await call("GET", f"{a.url}/accounts/{inside}", None, bearer("reader")))[0] == 200  # kept
        key_file(pair.keys, {**KEYS, "late": LATE})
        await reload(a, "api_keys_reloaded keys=6")
        assert (await call("GET", f"{a.url}/assets", None, late))[0] == 200  # b has not read it: a's own route
        key_file(pair.keys, {name: key for name, key in KEYS.items() if name != "reader"})
        await reload(a, "api_keys_reloaded keys=4")
        assert (await call("GET", f"{a.url}/assets", None, bearer("reader")))[0] == 401  # revoked
    finally:
        key_file(pair.keys, KEYS)
        await reload(a, "api_keys_reloaded keys=5")


async def reload(worker: Worker, expected: str, timeout: float = 20.0) -> str:
    """SIGHUP the worker and wait for the next log line that starts with ``expected``; return it."""
    assert worker.process is not None
    seen = len(worker.log_path.read_text())
    os.kill(worker.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in worker.log_path.read_text()[seen:].splitlines():
            if expected in line:
                return line
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {expected!r} line after SIGHUP; log:\n{worker.tail()}")


def test_a_worker_bound_to_every_interface_without_keys_refuses_to_start(tmp_path: Path) -> None:
    worker = Worker(World(), tmp_path / "data", tmp_path / "w.log", extra_env={"UBS_WEB_HOST": "0.0.0.0"}).start()
    assert worker.process is not None
    assert worker.process.wait(timeout=60) == ExitCode.BAD_CONFIGURATION == 78
    (line,) = worker.log_path.read_text().strip().splitlines()  # the reason, and nothing else
    assert line.startswith("ubscore worker: refusing to start: the gateway binds 0.0.0.0, not a loopback")
    assert worker.health() is None
