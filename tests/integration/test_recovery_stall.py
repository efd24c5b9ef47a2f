"""The recovery watch (app.guards.recovery_watch) on the real stack: a table recovery that never receives a changelog.

One worker applies operations, so the changelogs hold records. Then workers
with empty data directories rebuild from them while a failpoint keeps Faust
from fetching the ``cursors`` changelog, the state finding 15 of
docs/fault-injection.md found a worker in. The watch must notice within
UBS_STALL_S and get the recovery going: in place when its resume works, by
exiting 70 for the supervisor when it does not. Either way the rebuilt tables
must hold every operation once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.core.verification import Report

from .harness import PARTITIONS, Worker, World, exits_for_restart, produce, verify_eventually, workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

OPERATIONS = 300
STALL_S = 8.0  # shorter than the suite's: the wait is the point of this test, not a guard against noise
WATCHED = {"UBS_STALL_S": str(STALL_S)}


def applied_them_all(report: Report) -> None:
    assert report.ok, report.summary()
    assert report.counts["operations_distinct"] == OPERATIONS, report.summary()


async def test_a_recovery_that_receives_nothing_is_resumed_or_restarted(tmp_path: Path) -> None:
    world = World()
    first = Worker(world, tmp_path / "first", tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), workload(ops=OPERATIONS, users=40, seed=23))
        applied_them_all(await verify_eventually(first))
    finally:
        first.stop()

    soft = {"UBS_FAILPOINT": "stall_recovery:1", **WATCHED}
    resumed = Worker(world, tmp_path / "resumed", tmp_path / "resumed.log", extra_env=soft, port=first.port).start()
    try:
        await asyncio.to_thread(resumed.wait_ready, PARTITIONS, STALL_S * 6)
        log = resumed.log_path.read_text()
        assert "failpoint name=stall_recovery pass=1" in log, resumed.tail()
        assert "recovery_stalled topic=" in log and "action=resume" in log, resumed.tail()
        assert "recovery_resumed topic=" in log and "paused=true" in log, resumed.tail()
        assert "action=exit" not in log
        applied_them_all(await verify_eventually(resumed))
    finally:
        resumed.stop()

    hard = {"UBS_FAILPOINT": "stall_recovery_hard:1", **WATCHED}
    data = tmp_path / "stuck"
    stuck = Worker(world, data, tmp_path / "stuck.log", extra_env=hard, port=first.port).start()
    try:
        await exits_for_restart(stuck, STALL_S * 8)
    finally:
        stuck.stop()

    # What a supervisor does: start it again. It reopens what it rebuilt and reads the rest.
    restarted = Worker(world, data, tmp_path / "restarted.log", port=first.port).start()
    try:
        await asyncio.to_thread(restarted.wait_ready, PARTITIONS)
        applied_them_all(await verify_eventually(restarted))
    finally:
        restarted.stop()
