"""Crash safety on the real stack: SIGKILL between the RocksDB write and the offset commit.

The hazard docs/design.md describes: local RocksDB holds writes the changelog never got. The
worker is killed at a failpoint and restarted on its data directory: it must
discard those files (app.guards.local_state) and rebuild from the changelog, then
answer what it finds already applied there by re-sending it. Then it is stopped;
a new worker rebuilds every partition on an empty data directory. Both times the
verifier must find the tables equal to the events, the database and the
reference model. A clean stop is the one case where local files are reopened.
"""

from __future__ import annotations

import asyncio
import signal
import zlib
from pathlib import Path

import pytest

from .harness import PARTITIONS, Worker, World, produce, verify_eventually, workload

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


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
        assert "local_tables_discarded" in restarted.log_path.read_text()
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


def tables_dir(data_dir: Path) -> Path:
    return data_dir / "v1" / "tables"


async def test_clean_stop_keeps_local_tables_and_a_kill_discards_them(tmp_path: Path) -> None:
    world = World()
    data = tmp_path / "data"
    first = Worker(world, data, tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), workload(ops=300, users=20, seed=5))
        report = await verify_eventually(first)
        assert report.ok, report.summary()
    finally:
        first.stop()
    assert first.process is not None and first.process.returncode == 0, first.tail()
    assert (tables_dir(data) / "clean-shutdown").is_file(), first.tail()

    second = Worker(world, data, tmp_path / "second.log").start()
    try:
        await asyncio.to_thread(second.wait_ready, PARTITIONS)
        log = second.log_path.read_text()
        assert "local_tables_kept" in log and "local_tables_discarded" not in log, second.tail()
        assert not (tables_dir(data) / "clean-shutdown").exists()
        await produce(world.topic("balance.operations"), workload(ops=200, users=20, seed=6))
        report = await verify_eventually(second)
        assert report.ok, report.summary()
    finally:
        second.stop(signal.SIGKILL)
    assert not (tables_dir(data) / "clean-shutdown").exists()

    third = Worker(world, data, tmp_path / "third.log").start()
    try:
        await asyncio.to_thread(third.wait_ready, PARTITIONS)
        assert "local_tables_discarded" in third.log_path.read_text(), third.tail()
        report = await verify_eventually(third)
        assert report.ok, report.summary()
        assert report.counts["tables_checked"] == 40
    finally:
        third.stop()
