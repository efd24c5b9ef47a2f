"""Overload on the real stack: ?wait=true behind a backlog it cannot meet answers 503 at once.

The operation itself is durable (Kafka acknowledged it) and is applied later; the
client is told how long to wait (Retry-After) instead of holding a connection
until UBS_WAIT_TIMEOUT_S and getting a 504.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from app.frame.kafka_admin import ensure_topics

from .harness import BOOTSTRAP, PARTITIONS, REPLICATION, Worker, World, fresh_user_id, produce, workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def applying(worker: Worker, timeout: float = 60.0) -> None:
    """Until the worker has checkpointed some of the backlog."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{worker.url}/metrics") as response:
                text = await response.text()
            inputs = [line for line in text.splitlines() if line.startswith("ubscore_checkpoint_inputs_total")]
            if inputs and float(inputs[0].split()[-1]) > 1000:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("the worker did not start on its backlog")


async def test_a_wait_behind_a_long_backlog_is_refused_fast_and_applied_later(tmp_path: Path) -> None:
    world = World()
    env = {"UBS_ROLE": "ledger", "UBS_WAIT_TIMEOUT_S": "4"}
    # The backlog is all there before the worker starts: produced alongside, it would be applied as it came.
    await ensure_topics(BOOTSTRAP, {world.topic("balance.operations"): PARTITIONS}, replication=REPLICATION)
    await produce(world.topic("balance.operations"), workload(ops=40_000, users=2_000, seed=3))
    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log", extra_env=env).start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        await applying(worker)  # the rate is measured on a worker that is working
        user = fresh_user_id()
        op = {"op_id": "behind", "kind": "deposit", "user_id": user, "asset": 1, "amount": 5}
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{worker.url}/operations", params={"wait": "true"}, json=op) as response:
                elapsed = time.monotonic() - started
                body = await response.json()
                assert response.status == 503, body
                assert body["error"] == "overloaded" and body["op_id"] == "behind"
                assert int(response.headers["Retry-After"]) >= 1
            assert elapsed < 3.0, f"refused after {elapsed:.1f} s, not before the 4 s wait ran out"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                async with http.get(f"{worker.url}/operations/{user}/behind", params={"wait_s": "2"}) as response:
                    if response.status == 200:
                        assert (await response.json())["available"] == 5
                        return
            raise AssertionError("the refused operation was never applied")
    finally:
        worker.stop()
