"""The asset registry on the real stack: registered once through any worker, known by every worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, Tuple

import aiohttp
import pytest

from .harness import World, fresh_user_id
from .test_scaling import start, wait_spread

pytestmark = pytest.mark.integration


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Tuple[int, Dict[str, Any]]:
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json()


async def test_assets_register_once_and_every_worker_converts_decimals(tmp_path: Path) -> None:
    world = World()
    a, b = start(world, tmp_path, "a"), start(world, tmp_path, "b")
    try:
        await asyncio.to_thread(a.wait_ready)
        await wait_spread([a, b])
        btc = {"asset": 1, "code": "BTC", "scale": 8}
        async with aiohttp.ClientSession() as http:
            assert await call(http, "POST", f"{a.url}/assets", btc) == (201, btc)
            assert await call(http, "POST", f"{b.url}/assets", btc) == (200, btc)
            status, body = await call(http, "POST", f"{b.url}/assets", {**btc, "scale": 6})
            assert (status, body["error"], body["registered"]) == (409, "asset_exists", btc)
            status, body = await call(http, "POST", f"{a.url}/assets", {**btc, "scale": "8"})
            assert (status, body["field"]) == (422, "scale")
            assert await call(http, "POST", f"{a.url}/assets", {"asset": 2, "code": "USD", "scale": 2}) == (
                201,
                {"asset": 2, "code": "USD", "scale": 2},
            )
            for worker in (a, b):
                assert await call(http, "GET", f"{worker.url}/assets/1") == (200, btc)
                status, listed = await call(http, "GET", f"{worker.url}/assets")
                assert [asset["code"] for asset in listed["assets"]] == ["BTC", "USD"]
            assert (await call(http, "GET", f"{a.url}/assets/3"))[0] == 404

            user = fresh_user_id()
            deposit = {"op_id": "d", "kind": "deposit", "user_id": user, "asset": 1, "amount": "0.015"}
            status, event = await call(http, "POST", f"{b.url}/operations?wait=true", deposit)
            assert (status, event["amount"], event["available"]) == (200, 1_500_000, 1_500_000)
            status, body = await call(http, "POST", f"{a.url}/operations", {**deposit, "amount": "0.000000001"})
            assert (status, body["error"], body["field"]) == (422, "invalid_precision", "amount")
            status, account = await call(http, "GET", f"{a.url}/accounts/{user}")
            assert account["balances"]["1"] == {
                "available": 1_500_000,
                "locked": 0,
                "code": "BTC",
                "available_decimal": "0.01500000",
                "locked_decimal": "0.00000000",
            }
        late = start(world, tmp_path, "late")  # a worker that starts after the registrations reads them all
        try:
            await asyncio.to_thread(late.wait_ready)
            async with aiohttp.ClientSession() as http:
                assert await call(http, "GET", f"{late.url}/assets/1") == (200, btc)
        finally:
            late.stop()
    finally:
        a.stop()
        b.stop()
