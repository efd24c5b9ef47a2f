"""The time of an operation is the broker's: a producer's record timestamp is never taken (issue 23).

Operations produced straight to ``balance.operations`` with a timestamp of 0 and one
decades ahead get events whose ``ts`` is the time the broker appended them, and a
transfer produced so still lands on its payee: no money is destroyed.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List

import aiohttp
import pytest

from app.kafka_clients import new_producer
from app.partitioning import partition_for, user_key

from .harness import BOOTSTRAP, PARTITIONS, Worker, World, events_of, fresh_user_id, read_topic

pytestmark = pytest.mark.integration

#: 2096-01-01, decades after any broker's clock.
FAR_FUTURE_MS = 4_000_000_000_000
#: How far an event's ts may be from the moment around its production (clock steps, a slow checkpoint).
SLACK_MS = 60_000


async def produce_at(topic: str, items: List[Dict[str, Any]], timestamp_ms: int) -> None:
    """Each operation as its own record, keyed by its user, carrying the timestamp a producer chose."""
    producer = new_producer(BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for body in items:
            key = user_key(body["user_id"])
            await producer.send_and_wait(topic, value=json.dumps(body).encode(), key=key, timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()


async def events_for(world: World, user_id: int, count: int) -> List[Dict[str, Any]]:
    messages = await read_topic(world.topic("balance.events"), lambda m: len(events_of(m, [user_id])) >= count)
    return events_of(messages, [user_id])


def two_partitions_apart() -> tuple[int, int]:
    payer, payee = fresh_user_id(), fresh_user_id()
    while partition_for(user_key(payee), PARTITIONS) == partition_for(user_key(payer), PARTITIONS):
        payee = fresh_user_id()
    return payer, payee


async def test_a_producer_s_timestamp_is_replaced_by_the_broker_s(world: World, worker: Worker) -> None:
    payer, payee = two_partitions_apart()
    operations = world.topic("balance.operations")
    before_ms = int(time.time() * 1000)
    deposit = {"op_id": "dep-future", "kind": "deposit", "user_id": payer, "asset": 1, "amount": 100}
    await produce_at(operations, [deposit], timestamp_ms=FAR_FUTURE_MS)
    transfer = {
        "op_id": "t-zero",
        "kind": "transfer",
        "user_id": payer,
        "to_user_id": payee,
        "asset": 1,
        "amount": 60,
    }
    await produce_at(operations, [transfer], timestamp_ms=0)

    by_op = {event["op_id"]: event for event in await events_for(world, payer, 2)}
    assert (by_op["dep-future"]["status"], by_op["t-zero"]["status"]) == ("accepted", "accepted"), by_op
    for event in by_op.values():
        assert before_ms - SLACK_MS <= event["ts"] <= int(time.time() * 1000) + SLACK_MS, event

    (received,) = await events_for(world, payee, 1)  # the credit leg of a transfer is never lost
    assert (received["kind"], received["amount"], received["counterparty"]) == ("transfer_in", 60, payer), received
    assert before_ms - SLACK_MS <= received["ts"] <= int(time.time() * 1000) + SLACK_MS, received
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/accounts/{payee}") as response:
            account = await response.json()
    assert account["balances"]["1"]["available"] == 60, account
