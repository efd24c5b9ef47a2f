"""Trades on the real stack, buyer, seller and fee account on partitions that two workers share out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, List

import aiohttp
import pytest

from app.partitioning import partition_for, user_key

from .harness import PARTITIONS, World, fresh_user_id, verify_eventually
from .test_pipeline import wait_db
from .test_scaling import start, wait_spread

pytestmark = pytest.mark.integration

BASE, QUOTE = 1, 2


def user_on(partitions: List[int]) -> int:
    while True:
        user = fresh_user_id()
        if partition_for(user_key(user), PARTITIONS) in partitions:
            return user


async def submit(http: aiohttp.ClientSession, url: str, body: Dict[str, Any]) -> Dict[str, Any]:
    async with http.post(f"{url}/operations", params={"wait": "true"}, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def order(op_id: str, user: int, asset: int, amount: int, hold_id: str) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "lock", "user_id": user, "asset": asset, "amount": amount, "hold_id": hold_id}


async def fee_account(http: aiohttp.ClientSession, url: str, fees: int) -> Dict[str, Any]:
    """The fee account once its step applied: it runs on its own partition, not before the buyer's answer."""
    for _ in range(100):
        async with http.get(f"{url}/accounts/{fees}") as response:
            if response.status != 404:
                assert response.status == 200, await response.text()
                return await response.json()
        await asyncio.sleep(0.1)
    raise AssertionError(f"the fee account {fees} has no account after 10 s")


async def test_a_fill_between_workers_settles_every_leg_once(tmp_path: Path, cql: Any) -> None:
    world = World()
    a, b = start(world, tmp_path, "a"), start(world, tmp_path, "b")
    try:
        await asyncio.to_thread(a.wait_ready)
        parts_a, parts_b = await wait_spread([a, b])
        buyer, seller, fees = user_on(parts_a), user_on(parts_b), user_on(parts_b)
        async with aiohttp.ClientSession() as http:
            for user, asset, amount, hold in ((buyer, QUOTE, 100_000, "bid-1"), (seller, BASE, 50, "ask-1")):
                await submit(
                    http, b.url, {"op_id": "fund", "kind": "deposit", "user_id": user, "asset": asset, "amount": amount}
                )
                await submit(http, b.url, order("place", user, asset, amount // 2, hold))
            fill = {
                "op_id": "fill-1",
                "kind": "trade",
                "user_id": buyer,
                "buyer": {"user_id": buyer, "hold_id": "bid-1"},
                "seller": {"user_id": seller, "hold_id": "ask-1"},
                "base_asset": BASE,
                "quote_asset": QUOTE,
                "base_amount": 20,
                "quote_amount": 40_000,
                "buyer_fee": 1,
                "seller_fee": 40,
                "fee_account": fees,
                "release_rest": {"buyer": True},
            }
            settled = await submit(http, b.url, fill)  # sent to b, applied on a (the buyer's), answered at b
            assert (settled["status"], settled["role"], settled["counterparty"]) == ("accepted", "buyer", seller)
            assert settled["changes"] == [
                {"asset": BASE, "available": 19, "locked": 0},
                {"asset": QUOTE, "available": 60_000, "locked": 0},  # the rest of the bid released
            ]
            again = await submit(http, a.url, fill)
            assert again == settled
            async with http.get(f"{a.url}/accounts/{seller}") as response:
                account = await response.json()
            assert account["balances"] == {
                str(BASE): {"available": 25, "locked": 5},
                str(QUOTE): {"available": 39_960, "locked": 0},
            }
            assert account["holds"] == [{"hold_id": "ask-1", "asset": BASE, "remaining": 5, "expires_at_ms": None}]
            assert (await fee_account(http, b.url, fees))["balances"] == {
                str(BASE): {"available": 1, "locked": 0},
                str(QUOTE): {"available": 40, "locked": 0},
            }
            refused = await submit(http, a.url, {**fill, "op_id": "fill-2", "base_amount": 6, "quote_amount": 100})
            assert (refused["status"], refused["reason"]) == ("rejected", "unknown_hold")  # the bid was released
        (row,) = wait_db(cql, world, "trades", buyer, 1, key="buyer")
        assert (row.trade_id, row.seller, row.base_amount, row.quote_amount, row.buyer_fee, row.seller_fee) == (
            "fill-1",
            seller,
            20,
            40_000,
            1,
            40,
        )
        report = await verify_eventually(a)
        assert report.ok, report.summary()
        assert report.counts["trades_settled"] == 1
    finally:
        a.stop()
        b.stop()
