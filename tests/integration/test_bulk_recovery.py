"""Rebuilding tables in bulk (app.frame.bulk_recovery) on the real stack: the same tables as Faust's recovery builds.

One worker applies a workload and stops. Two workers with empty data
directories then rebuild every partition from the changelogs: one through
Faust's recovery alone, one through the bulk load. Their accounts must be
equal, and the results table of the bulk-rebuilt one must answer a redelivery
of every operation as a duplicate: the verifier finds nothing applied twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.tools.verifier import read_tables

from .harness import PARTITIONS, Worker, World, produce, verify_eventually, workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

OPERATIONS = 1500
FAUST_ONLY = {"UBS_BULK_RECOVERY_MIN_RECORDS": str(10**9)}
BULK_ALWAYS = {"UBS_BULK_RECOVERY_MIN_RECORDS": "1"}


async def test_a_bulk_rebuild_equals_faust_s_and_deduplicates_every_redelivery(tmp_path: Path) -> None:
    world = World()
    messages = workload(ops=OPERATIONS, users=60, seed=29, faults=True, expiring=False)
    first = Worker(world, tmp_path / "first", tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), messages)
        report = await verify_eventually(first)
        assert report.ok, report.summary()
        users = sorted(report.accounts)
    finally:
        first.stop()

    faust_only = Worker(world, tmp_path / "faust", tmp_path / "faust.log", extra_env=FAUST_ONLY, port=first.port)
    faust_only.start()
    try:
        await asyncio.to_thread(faust_only.wait_ready, PARTITIONS)
        by_faust = await read_tables(faust_only.url, users)
        assert "bulk_recovery topics=" not in faust_only.log_path.read_text()
    finally:
        faust_only.stop()

    bulk = Worker(world, tmp_path / "bulk", tmp_path / "bulk.log", extra_env=BULK_ALWAYS, port=first.port).start()
    try:
        await asyncio.to_thread(bulk.wait_ready, PARTITIONS)
        log = bulk.log_path.read_text()
        assert "bulk_recovery topics=" in log and "bulk_recovery_failed" not in log, bulk.tail()
        assert await read_tables(bulk.url, users) == by_faust
        assert all(by_faust[user] is not None for user in users)
        await produce(world.topic("balance.operations"), messages)  # every operation again: all duplicates
        report = await verify_eventually(bulk)
        assert report.ok, report.summary()
        assert report.counts["operations_distinct"] >= OPERATIONS - 100, report.summary()
        assert await read_tables(bulk.url, users) == by_faust  # nothing applied twice
    finally:
        bulk.stop()
