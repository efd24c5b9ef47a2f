"""A bug in the decision code, injected for one message on the real stack: the partition goes on.

``UBS_FAILPOINT=raise_in_decision:N`` makes the ledger's decision for its Nth message
raise an exception of a class no handler names. The agent's firewall must dead-letter
that message with the error, answer it with a ``processing_failed`` rejection, and
apply everything after it; the verifier must find every invariant intact.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from .harness import PARTITIONS, Worker, World, events_of, produce, read_topic, verify_eventually, workload

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_unexpected_exception_in_the_decision_is_dead_lettered_and_the_partition_goes_on(
    tmp_path: Path,
) -> None:
    world = World()
    env = {"UBS_FAILPOINT": "raise_in_decision:120"}
    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log", extra_env=env).start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        messages = workload(ops=400, users=12, seed=91)
        await produce(world.topic("balance.operations"), messages)
        users = sorted({int(key) for key, _ in messages if key is not None})

        def failed(found: List[Tuple[Optional[bytes], bytes]]) -> List[Dict[str, Any]]:
            return [e for e in events_of(found, users) if e["reason"] == "processing_failed"]

        events = await read_topic(world.topic("balance.events"), lambda m: len(failed(m)) >= 1, timeout=90)
        (failure,) = failed(events)
        assert (failure["status"], failure["seq"] > 0) == ("rejected", True)

        report = await verify_eventually(worker)
        assert report.ok, report.summary()
        assert report.counts["events_processing_failed"] == 1

        def letters(found: List[Tuple[Optional[bytes], bytes]]) -> List[Dict[str, Any]]:
            decoded = [json.loads(value) for _, value in found]
            return [x for x in decoded if x["error"]["error"] == "processing_failed"]

        (letter,) = letters(await read_topic(world.topic("balance.operations.dlq"), lambda m: len(letters(m)) >= 1))
        assert "InjectedFailure" in letter["error"]["message"]
        assert json.loads(letter["value"])["op_id"] == failure["op_id"]
        assert "InjectedFailure" in worker.log_path.read_text()
        assert worker.process is not None and worker.process.poll() is None  # it never exited
    finally:
        worker.stop()
