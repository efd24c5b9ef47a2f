"""The gateway's guards on a worker started with a token and a small body limit.

Every route but /health needs the bearer token (a key with every scope, app.web.auth);
bodies beyond UBS_MAX_BODY_BYTES are refused
before they are parsed; nothing a client sends, through the view or the public
topic, can be a credit leg. A refused request changes nothing.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest

from app.partitioning import user_key

from .harness import PARTITIONS, Worker, World, events_of, fresh_user_id, produce, read_topic

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
LIMIT = 1024


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("guarded")
    env = {"UBS_API_TOKEN": TOKEN, "UBS_MAX_BODY_BYTES": str(LIMIT)}
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
