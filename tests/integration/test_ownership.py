"""A worker cut off from the brokers stops vouching for its partitions within its ownership bound.

Worker B reaches Kafka only through TCP proxies (tests/integration/netcut.py); cutting them is a
partition between B and every broker while clients still reach B over HTTP and worker A still
reaches Kafka. Within ``UBS_OWNERSHIP_BOUND_S`` (plus the heartbeat interval: the last answered
heartbeat may be that old when the cut comes) B's ``/health`` says ``partitioned`` and its reads
answer ``not_owner_confirmed``; once A has taken B's partitions over and applied a withdrawal, no
read through B shows the balance from before it while the cut lasts, nor after the heal, when B
takes partitions back and brings their tables up to date before it answers from them. B's health
is ok again (after a restart, when it had a write to make and fenced itself), and the accounts
changelog, what every rebuild reads, never goes back.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

import aiohttp
import pytest

from app.exit_codes import ExitCode
from app.partitioning import partition_for, user_key
from app.topic_reader import read_topic

from .harness import BOOTSTRAP, PARTITIONS, Worker, World, fresh_user_id
from .netcut import BrokerProxies
from .test_scaling import wait_spread

pytestmark = pytest.mark.integration

SESSION_S = 12.0
BOUND_S = SESSION_S / 2  # the default: half the session timeout
HEARTBEAT_S = 3.0  # app.faust_app: min(3, session timeout / 3)
ENV = {"UBS_SESSION_TIMEOUT_S": str(SESSION_S)}


async def answer(http: aiohttp.ClientSession, url: str) -> Tuple[int, Dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json(content_type=None)


async def until(check: Callable[[], Awaitable[Optional[Any]]], timeout: float, what: str) -> Any:
    """``check()``'s first answer that is not None, polled every 0.25 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found is not None:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def user_owned_by(partitions: list) -> int:
    while True:
        user = fresh_user_id()
        if partition_for(user_key(user), PARTITIONS) in partitions:
            return user


async def test_a_worker_cut_from_the_brokers_refuses_within_its_bound_and_never_reads_stale(tmp_path: Path) -> None:
    world = World()
    with BrokerProxies.from_stack() as proxies:
        a = Worker(world, tmp_path / "a" / "data", tmp_path / "a.log", extra_env=ENV).start()
        cut_off = {**ENV, "UBS_KAFKA": proxies.kafka_url}  # B reaches the brokers only through the proxies
        b = Worker(world, tmp_path / "b" / "data", tmp_path / "b.log", extra_env=cut_off).start()
        try:
            await asyncio.to_thread(a.wait_ready)
            _, b_parts = await wait_spread([a, b])
            user = user_owned_by(b_parts)
            account = f"{b.url}/accounts/{user}"
            async with aiohttp.ClientSession() as http:
                deposit = {"op_id": "d-1", "kind": "deposit", "user_id": user, "asset": 1, "amount": 100}
                async with http.post(f"{b.url}/operations", params={"wait": "true"}, json=deposit) as response:
                    assert response.status == 200, await response.text()
                status, body = await answer(http, account)
                assert (status, body["seq"], body["balances"]["1"]["available"]) == (200, 1, 100), body

                async def checkpointed() -> Optional[bool]:  # its cursor, the checkpoint's last write, is in
                    status, body = await answer(http, account)
                    return True if status == 200 and body["applied_offset"] is not None else None

                await until(checkpointed, 10, "B's checkpoint of the deposit ends")  # nothing of B's in flight
                proxies.cut("blackhole")
                cut_at = time.monotonic()

                async def refusing() -> Optional[float]:
                    health, read = await answer(http, f"{b.url}/health"), await answer(http, account)
                    if health[0] == 503 and health[1].get("status") == "partitioned":
                        if read[0] == 503 and read[1].get("error") == "not_owner_confirmed":
                            return time.monotonic()
                    return None

                refused_at = await until(refusing, BOUND_S + HEARTBEAT_S + 10, "B refuses: partitioned")
                assert refused_at - cut_at <= BOUND_S + HEARTBEAT_S + 2, refused_at - cut_at

                withdrawal = {"op_id": "w-1", "kind": "withdraw", "user_id": user, "asset": 1, "amount": 60}
                async with http.post(f"{a.url}/operations", json=withdrawal) as response:
                    assert response.status in (200, 202), await response.text()

                async def applied_by_a() -> Optional[Dict[str, Any]]:
                    status, body = await answer(http, f"{a.url}/operations/{user}/w-1?wait_s=2")
                    return body if status == 200 else None

                result = await until(applied_by_a, 3 * SESSION_S + 30, "A takes over and applies the withdrawal")
                assert (result["status"], result["available"], result["seq"]) == ("accepted", 40, 2)

                for _ in range(20):  # B, still cut off, never answers the balance from before the withdrawal
                    status, body = await answer(http, account)
                    assert status == 503 or body.get("seq", 0) >= 2, (status, body)
                    await asyncio.sleep(0.25)

                proxies.heal()

                async def vouching_again() -> Optional[Dict[str, Any]]:
                    if b.process is not None and b.process.poll() is not None:
                        # B fetched the withdrawal as the link came back and could not write it in time:
                        # it fenced itself (app.agents.checkpoint, rule 5) and its supervisor starts it again.
                        assert b.process.returncode == ExitCode.OWNERSHIP_LAPSED, b.process.returncode
                        b.start()
                        return None
                    try:
                        status, body = await answer(http, f"{b.url}/health")
                    except aiohttp.ClientError:
                        return None
                    return body if status == 200 else None

                await until(vouching_again, 120, "B's health ok again after the heal")

                healed_at = time.monotonic()
                while time.monotonic() - healed_at < 30:  # nor after the heal, whoever owns the partition now
                    status, body = await answer(http, account)
                    assert status == 503 or body.get("seq", 0) >= 2, (status, body)
                    await asyncio.sleep(0.1)
        finally:
            a.stop()
            b.stop()
    changelog = await read_topic(BOOTSTRAP, f"{world.app_id}-accounts-changelog", timeout_s=30)
    seqs = [json.loads(r.value)["seq"] for r in changelog if r.key == user_key(user)]
    assert seqs == sorted(seqs) and seqs[-1] == 2, seqs
