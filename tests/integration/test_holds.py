"""Holds on the real stack: open, list, capture across partitions, release, expire on time."""

from __future__ import annotations

import json
import time
from typing import Any, Dict

import pytest

from app.partitioning import partition_for, user_key

from .harness import Worker, World, fresh_user_id
from .test_pipeline import get_json, post, user_events, wait_db

pytestmark = pytest.mark.integration


async def submit(worker: Worker, **body: Any) -> Dict[str, Any]:
    response = await post(worker, body)
    assert response.status == 200, await response.text()
    return json.loads(await response.read())


async def test_an_order_locks_is_filled_from_its_hold_and_cancelled(world: World, worker: Worker, cql: Any) -> None:
    buyer, seller = fresh_user_id(), fresh_user_id()
    while partition_for(user_key(seller), 8) == partition_for(user_key(buyer), 8):
        seller = fresh_user_id()
    await submit(worker, op_id="d", kind="deposit", user_id=buyer, asset=2, amount=1000)
    opened = await submit(worker, op_id="o1", kind="lock", user_id=buyer, asset=2, amount=600, hold_id="order-1")
    assert (opened["status"], opened["hold_id"], opened["locked"]) == ("accepted", "order-1", 600)

    status, listed = await get_json(f"{worker.url}/accounts/{buyer}/holds")
    assert status == 200
    assert listed["holds"] == [{"hold_id": "order-1", "asset": 2, "remaining": 600, "expires_at_ms": None}]

    fill = await submit(
        worker,
        op_id="fill-1",
        kind="transfer",
        user_id=buyer,
        to_user_id=seller,
        asset=2,
        amount=250,
        source="locked",
        hold_id="order-1",
    )
    assert (fill["status"], fill["available"], fill["locked"]) == ("accepted", 400, 350)
    (landed,) = await user_events(world, seller, 1)
    assert (landed["kind"], landed["amount"], landed["counterparty"]) == ("transfer_in", 250, buyer)

    cancel = await submit(worker, op_id="c1", kind="unlock", user_id=buyer, asset=2, hold_id="order-1")
    assert (cancel["status"], cancel["amount"], cancel["available"], cancel["locked"]) == ("accepted", 350, 750, 0)
    again = await submit(worker, op_id="c1", kind="unlock", user_id=buyer, asset=2, hold_id="order-1")
    assert again == cancel  # a retry of the cancel, answered with its result
    reused = await submit(worker, op_id="o2", kind="lock", user_id=buyer, asset=2, amount=1, hold_id="order-1")
    assert (reused["status"], reused["reason"]) == ("rejected", "hold_exists")
    status, listed = await get_json(f"{worker.url}/accounts/{buyer}/holds")
    assert listed["holds"] == []

    history = wait_db(cql, world, "balance_events", buyer, 5)
    assert [(r.op_id, r.hold_id) for r in sorted(history, key=lambda r: r.seq)] == [
        ("d", None),
        ("o1", "order-1"),
        ("fill-1", "order-1"),
        ("c1", "order-1"),
        ("o2", "order-1"),
    ]


async def test_a_hold_expires_on_its_own(world: World, worker: Worker, cql: Any) -> None:
    user = fresh_user_id()
    await submit(worker, op_id="d", kind="deposit", user_id=user, asset=1, amount=100)
    expires_at_ms = int(time.time() * 1000) + 1500
    await submit(
        worker, op_id="o", kind="lock", user_id=user, asset=1, amount=70, hold_id="gtd", expires_at_ms=expires_at_ms
    )
    events = await user_events(world, user, 3)
    expired = events[-1]
    assert (expired["kind"], expired["op_id"], expired["hold_id"], expired["amount"]) == (
        "hold_expired",
        "gtd",
        "gtd",
        70,
    )
    assert (expired["available"], expired["locked"], expired["seq"], expired["ts"]) == (100, 0, 3, expires_at_ms)
    status, listed = await get_json(f"{worker.url}/accounts/{user}/holds")
    assert listed["holds"] == []
    rows = wait_db(cql, world, "balance_events", user, 3)
    assert sorted(r.kind for r in rows) == ["deposit", "hold_expired", "lock"]
