"""Roles on the real stack: a ledger-only worker and a sink-only process settle together.

The sink role runs the settlement sink without the Faust app (no tables, no
gateway), so its database driver does not share the ledger's interpreter; the
ledger role runs everything else. Together they must leave the database equal
to the events and the tables, like one worker of role ``all``.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Dict

import pytest

from .harness import PARTITIONS, Worker, World, produce, verify_eventually, workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def scrape(worker: Worker) -> Dict[str, float]:
    """The samples of a process's /metrics, by ``name{labels}``."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in lines if line and line[0] != "#"}


def sample(samples: Dict[str, float], series: str) -> float:
    return samples.get(series, 0.0)


async def test_a_ledger_worker_and_a_sink_process_settle_every_event(tmp_path: Path) -> None:
    world = World()
    ledger = Worker(world, tmp_path / "ledger", tmp_path / "ledger.log", extra_env={"UBS_ROLE": "ledger"}).start()
    sink = Worker(world, tmp_path / "sink", tmp_path / "sink.log", extra_env={"UBS_ROLE": "sink"}).start()
    try:
        await asyncio.to_thread(ledger.wait_ready, PARTITIONS)
        await produce(world.topic("balance.operations"), workload(ops=400, users=30, seed=11))
        report = await verify_eventually(ledger)
        assert report.ok, report.summary()
        assert report.counts["db_rows_checked"] > 0, report.summary()
        ledger_log = ledger.log_path.read_text()
        assert "SettlementSink" not in ledger_log, "the ledger role must not run the sink"
        assert sink.process is not None and sink.process.poll() is None, sink.tail()
        # A sink alone has no gateway; its own server answers /metrics on its port.
        sink_metrics, ledger_metrics = await asyncio.to_thread(scrape, sink), await asyncio.to_thread(scrape, ledger)
        assert sample(sink_metrics, "ubscore_sink_events_total") >= 400  # one event per operation at least
        assert sample(sink_metrics, 'ubscore_partitions_owned{consumer="sink"}') == PARTITIONS
        assert sample(ledger_metrics, 'ubscore_partitions_owned{consumer="ledger"}') == PARTITIONS
        assert 'consumer="sink"' not in "".join(ledger_metrics), "a ledger-only worker reports no sink"
        assert sample(ledger_metrics, "ubscore_sink_events_total") == 0
    finally:
        sink.stop()
        ledger.stop()
    assert sink.process is not None and sink.process.returncode == 0, sink.tail()
