"""The short fault-injection run of CI: every kind of fault once, then the verifier must pass.

The long suite (``make chaos``: 20 seeded runs of 20k operations, faults drawn
from each seed, database outages included) uses the same runner; see
tests/integration/chaos.py and the table in tests/integration/CHAOS.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .chaos import Fault, run_once

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

# Spaced so that no fault pre-empts the failpoint armed before it on the same worker.
FAULTS = [
    Fault(2, "failpoint", 0, "after_table_write:100"),
    Fault(3, "gateway", 1, "after_produce:1"),
    Fault(25, "zombie", 0, "stopped_s=13"),
    Fault(38, "kill", 1, "SIGKILL"),
    Fault(40, "broker", 0, "down_s=3"),
    Fault(55, "wipe", 0),
    Fault(56, "failpoint", 1, "before_commit:2"),
    Fault(57, "failpoint", 0, "after_send:100"),
]


async def test_every_fault_once_then_nothing_lost_or_doubled(tmp_path: Path) -> None:
    result = await run_once(seed=11, ops=6000, rate=80, guarantee="at_least_once", base=tmp_path, faults=FAULTS)
    log = (tmp_path / "seed-11.jsonl").read_text()
    assert result.violations == 0, "\n".join(result.problems) + "\n" + log
    assert sum(result.faults.values()) == len(FAULTS), log
    assert result.http_acked == 150, log
    # Timing decides whether an armed failpoint fires before the next fault or the end; most must.
    assert result.fired >= 2, log
