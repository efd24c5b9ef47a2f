"""The short fault-injection run of CI: every kind of fault once, then the verifier must pass.

The long suite (``make chaos``: 20 seeded runs of 20k operations, faults drawn
from each seed, database outages included) uses the same runner; see
tests/integration/chaos.py and the tables in docs/fault-injection.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .chaos import EVERY_FAULT_ONCE, run_once

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.disruptive, pytest.mark.timeout(1200)]


async def test_every_fault_once_then_nothing_lost_or_doubled(tmp_path: Path) -> None:
    result = await run_once(seed=11, ops=6000, rate=80, base=tmp_path, faults=EVERY_FAULT_ONCE)
    log = (tmp_path / "seed-11.jsonl").read_text()
    assert result.violations == 0, "\n".join(result.problems) + "\n" + log
    assert sum(result.faults.values()) == len(EVERY_FAULT_ONCE), log
    assert result.http_acked == 150, log
    # Timing decides whether an armed failpoint fires before the next fault or the end; most must.
    assert result.fired >= 2, log
