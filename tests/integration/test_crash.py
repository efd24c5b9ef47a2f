"""Crash safety on the real stack: SIGKILL between the RocksDB write and the offset commit.

The hazard of DESIGN.md: local RocksDB holds writes the changelog never got. The
worker is killed at a failpoint, restarted on its own files (it must re-send what
it finds already applied), then stopped; a new worker rebuilds every partition
from the changelog alone on an empty data directory. Both times the verifier
must find the tables equal to the events, the database and the reference model.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from .harness import PARTITIONS, Worker, World, produce, verify_eventually, workload

pytestmark = pytest.mark.integration


async def wait_exit(worker: Worker, timeout: float = 120.0) -> int:
    assert worker.process is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while worker.process.poll() is None:
        if loop.time() > deadline:
            raise TimeoutError(f"worker did not hit its failpoint; log:\n{worker.tail()}")
        await asyncio.sleep(0.2)
    return worker.process.returncode


@pytest.mark.parametrize("failpoint", ["after_table_write:150", "after_send:220", "before_commit:2"])
async def test_kill_at_failpoint_then_rebuild_from_changelog(failpoint: str, tmp_path: Path) -> None:
    world = World()
    messages = workload(ops=600, users=40, seed=zlib.crc32(failpoint.encode()) % 1000, faults=True)
    crashing = Worker(world, tmp_path / "local", tmp_path / "crash.log", extra_env={"UBS_FAILPOINT": failpoint}).start()
    await asyncio.to_thread(crashing.wait_ready, PARTITIONS)
    await produce(world.topic("balance.operations"), messages)
    assert await wait_exit(crashing) == -9

    restarted = Worker(world, tmp_path / "local", tmp_path / "restart.log").start()
    try:
        await asyncio.to_thread(restarted.wait_ready, PARTITIONS)
        report = await verify_eventually(restarted)
        assert report.ok, report.summary()
    finally:
        restarted.stop()

    rebuilt = Worker(world, tmp_path / "fresh", tmp_path / "rebuild.log").start()
    try:
        await asyncio.to_thread(rebuilt.wait_ready, PARTITIONS)
        report = await verify_eventually(rebuilt, timeout=30)
        assert report.ok, report.summary()
        assert report.counts["tables_checked"] == 40
    finally:
        rebuilt.stop()
