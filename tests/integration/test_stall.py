"""The input progress watch (app.guards.input_watch) on the real stack: pending records that never reach the agent.

A failpoint pauses the worker's input partitions inside Faust after the agent's
50th message, the state a restarted worker was once found in (docs/fault-injection.md, finding
11), while operations keep arriving. The watch must notice within UBS_STALL_S and
get the input moving again: in place when a resume works, by exiting 70 for its
supervisor when it does not. Either way the verifier must find every operation
applied once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.core.verification import Report

from .harness import PARTITIONS, STALL_S, Worker, World, exits_for_restart, produce, verify_eventually, workload

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


OPERATIONS = 400


def applied_them_all(report: Report) -> None:
    """The verifier passes vacuously on a topic it read nothing from: it must have seen every operation."""
    assert report.ok, report.summary()
    assert report.counts["operations_distinct"] == OPERATIONS, report.summary()
    assert report.counts["events_distinct"] >= OPERATIONS, report.summary()


async def produce_across_the_stall(world: World, worker: Worker) -> None:
    """Part of the operations, then (once the failpoint paused the input) the rest."""
    messages = workload(ops=OPERATIONS, users=30, seed=37)
    await produce(world.topic("balance.operations"), messages[:100])
    deadline = time.monotonic() + 60
    while "failpoint name=stall_input" not in worker.log_path.read_text():
        assert time.monotonic() < deadline, f"the failpoint never fired; log:\n{worker.tail()}"
        await asyncio.sleep(0.2)
    await produce(world.topic("balance.operations"), messages[100:])


async def test_a_stalled_input_is_resumed_in_place(tmp_path: Path) -> None:
    world = World()
    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log", extra_env={"UBS_FAILPOINT": "stall_input:50"})
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        await produce_across_the_stall(world, worker)
        applied_them_all(await verify_eventually(worker, timeout=STALL_S * 4))
        log = worker.log_path.read_text()
        assert "input_stalled topic=" in log and "action=resume" in log, worker.tail()
        assert "action=exit" not in log
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop()


async def test_a_stall_that_a_resume_cannot_lift_ends_in_an_exit_for_the_supervisor(tmp_path: Path) -> None:
    world = World()
    data = tmp_path / "data"
    stuck = Worker(world, data, tmp_path / "stuck.log", extra_env={"UBS_FAILPOINT": "stall_input_hard:50"}).start()
    try:
        await asyncio.to_thread(stuck.wait_ready, PARTITIONS)
        await produce_across_the_stall(world, stuck)
        await exits_for_restart(stuck, STALL_S * 4)
    finally:
        stuck.stop()

    # What a supervisor does: start it again. It rebuilds from the changelogs and catches up.
    restarted = Worker(world, data, tmp_path / "restarted.log", port=stuck.port).start()
    try:
        await asyncio.to_thread(restarted.wait_ready, PARTITIONS)
        applied_them_all(await verify_eventually(restarted))
    finally:
        restarted.stop()
