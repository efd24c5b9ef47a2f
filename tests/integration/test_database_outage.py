"""The database goes away: the ledger keeps going, the sink pauses, loses nothing and catches up."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest

from app.tools.verifier import verify

from .harness import PARTITIONS, REPO, Worker, World, produce, verify_eventually, workload, world_settings

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.disruptive, pytest.mark.timeout(1200)]

OUTAGE_S = float(os.environ.get("UBS_TEST_OUTAGE_S", "20"))


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "stack/bin/stack"), *args], check=True, timeout=300)


async def sink_paused(worker: Worker) -> bool:
    """The worker's ``ubscore_sink_paused`` gauge; a scrape without the sample is an error, not "no"."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/metrics") as response:
            text = await response.text()
    samples = [line.split()[1] for line in text.splitlines() if line.startswith("ubscore_sink_paused ")]
    assert samples, "no ubscore_sink_paused sample in /metrics"
    return float(samples[0]) == 1


async def test_sink_pauses_through_a_database_outage_and_catches_up(tmp_path: Path) -> None:
    world = World()
    before, during = workload(ops=300, users=30, seed=3), workload(ops=300, users=30, seed=4)
    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), before)
        assert (await verify_eventually(worker, timeout=90)).ok

        await asyncio.to_thread(stack, "down", "cassandra")
        try:
            loop = asyncio.get_running_loop()
            outage_ends = loop.time() + OUTAGE_S
            await produce(world.topic("balance.operations"), during)
            # The ledger does not wait for the database: every operation gets its event.
            settings = world_settings(worker)
            while not (report := await verify(settings, worker.url, with_database=False)).ok:
                assert loop.time() < outage_ends + 60, report.summary()
                await asyncio.sleep(1)
            while not await sink_paused(worker):
                assert loop.time() < outage_ends + 60, "the sink never reported the outage"
                await asyncio.sleep(0.5)
            await asyncio.sleep(max(0.0, outage_ends - loop.time()))
        finally:
            await asyncio.to_thread(stack, "up", "cassandra")

        report = await verify_eventually(worker, timeout=120)
        assert report.ok, report.summary()
        assert report.counts["db_rows_checked"] > 600
        assert not await sink_paused(worker)
    finally:
        worker.stop()
        print(worker.tail(20))
