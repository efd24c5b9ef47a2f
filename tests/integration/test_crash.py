"""Crash safety on the real stack: SIGKILL between the RocksDB write and the offset commit.

The worker is killed at each step of a checkpoint (app.agents.checkpoint) and
restarted on its data directory: it reopens its local files, reads the
changelog tail, and answers what it finds already applied by re-sending it.
Then it is stopped; a new worker rebuilds every partition on an empty data
directory. Both times the verifier must find the tables equal to the events,
the database and the reference model.
"""

from __future__ import annotations

import asyncio
import signal
import zlib
from pathlib import Path
from typing import List

import pytest

from app.partitioning import partition_for

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


@pytest.mark.parametrize(
    "failpoint", ["after_results:150", "after_table_write:150", "after_send:220", "before_commit:2"]
)
async def test_kill_at_failpoint_then_rebuild_from_changelog(failpoint: str, tmp_path: Path) -> None:
    world = World()
    messages = workload(ops=600, users=40, seed=zlib.crc32(failpoint.encode()) % 1000, faults=True)
    crashing = Worker(world, tmp_path / "local", tmp_path / "crash.log", extra_env={"UBS_FAILPOINT": failpoint}).start()
    await asyncio.to_thread(crashing.wait_ready, PARTITIONS)
    await produce(world.topic("balance.operations"), messages)
    assert await wait_exit(crashing) == -9

    restarted = Worker(world, tmp_path / "local", tmp_path / "restart.log", port=crashing.port).start()
    try:
        await asyncio.to_thread(restarted.wait_ready, PARTITIONS)
        assert "local_table_set_aside" not in restarted.log_path.read_text()
        report = await verify_eventually(restarted)
        assert report.ok, report.summary()
    finally:
        restarted.stop()

    rebuilt = Worker(world, tmp_path / "fresh", tmp_path / "rebuild.log", port=restarted.port).start()
    try:
        await asyncio.to_thread(rebuilt.wait_ready, PARTITIONS)
        report = await verify_eventually(rebuilt, timeout=30)
        assert report.ok, report.summary()
        assert report.counts["tables_checked"] == 40
    finally:
        rebuilt.stop()


def tables_dir(data_dir: Path) -> Path:
    return data_dir / "v1" / "tables"


def stores(data_dir: Path) -> List[str]:
    """The partition stores (``<table>-<partition>.db``, or set aside), not Faust's backup folders."""
    return sorted(entry.name for entry in tables_dir(data_dir).iterdir() if ".db" in entry.name)


def _of_holds(line: str) -> bool:
    """A log line about a store of the tables only partitions with holds write (expiries, holds)."""
    return "table=expiries " in line or "table=holds " in line


async def test_local_tables_are_reopened_after_a_kill_and_set_aside_on_another_cluster(tmp_path: Path) -> None:
    world = World()
    data = tmp_path / "data"
    loads = [workload(ops=300, users=20, seed=5), workload(ops=200, users=20, seed=6)]
    # The partitions that hold records: the users' (random ids), whose credit legs stay among them.
    touched = {partition_for(key, PARTITIONS) for load in loads for key, _ in load if key is not None}
    first = Worker(world, data, tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), loads[0])
        report = await verify_eventually(first)
        assert report.ok, report.summary()
    finally:
        first.stop(signal.SIGKILL)
    kept = stores(data)
    assert len(kept) == 5 * PARTITIONS and all(name.endswith(".db") for name in kept)

    second = Worker(world, data, tmp_path / "second.log", port=first.port).start()
    try:
        await asyncio.to_thread(second.wait_ready, PARTITIONS)
        assert "local_table_set_aside" not in second.log_path.read_text(), second.tail()
        await produce(world.topic("balance.operations"), loads[1])
        report = await verify_eventually(second)
        assert report.ok, report.summary()
    finally:
        second.stop(signal.SIGKILL)
    assert stores(data) == kept

    # The same files against topics that never held them (a reset stack, another cluster).
    elsewhere = World()
    third = Worker(elsewhere, data, tmp_path / "third.log").start()
    try:
        await asyncio.to_thread(third.wait_ready, PARTITIONS)
        log = third.log_path.read_text()
        # A store that never received a record records no offset, so it cannot disagree with a cluster.
        # (Expiries and holds are written only where a lock that opens a hold was applied: not counted.)
        set_aside = [line for line in log.splitlines() if "local_table_set_aside" in line and not _of_holds(line)]
        assert len(set_aside) == 3 * len(touched), third.tail()
        await produce(elsewhere.topic("balance.operations"), workload(ops=100, users=10, seed=7))
        report = await verify_eventually(third)
        assert report.ok, report.summary()
    finally:
        third.stop()
    moved = [name for name in stores(data) if ".set-aside-" in name and not name.startswith(("expiries", "holds"))]
    assert len(moved) == 3 * len(touched)
