"""How fast one ledger worker works through a backlog, with nothing else producing.

``balance.operations`` is filled with N operations first (a worker started and
stopped once creates the topics); then one worker of role ledger starts, and the
figure is operations per second from its first ready answer to the last event.
Without a producer or a sink beside it, this is the ledger's own rate on this
machine; ``bench.pipeline`` measures it side by side with the raw baselines.

    python -m bench.backlog                         # 30,000 operations, 1,000 users
    BENCH_OPS=50000 UBS_MAX_FETCH_BYTES=16384 python -m bench.backlog
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.pipeline import count_until, produce_all
from tests.integration.harness import PARTITIONS, Worker, World, workload

OPS = int(os.environ.get("BENCH_OPS", "30000"))
USERS = int(os.environ.get("BENCH_USERS", "1000"))
LEDGER = {"UBS_ROLE": "ledger"}


def checkpoint_metrics(url: str) -> dict:
    """The worker's ubscore_checkpoint* counters, by name."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(" ", 1) for line in lines if line.startswith("ubscore_checkpoint"))


async def main() -> None:
    messages = workload(OPS, USERS)
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-backlog-"))
    creator = Worker(world, base / "creator", base / "creator.log", loglevel="warn", extra_env=LEDGER).start()
    await asyncio.to_thread(creator.wait_ready, PARTITIONS, 180)
    creator.stop()
    await produce_all(world.topic("balance.operations"), messages)
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn", extra_env=LEDGER, port=creator.port)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS, 180)
        start = time.monotonic()
        done = await count_until(world.topic("balance.events"), len(messages), timeout=900)
        metrics = await asyncio.to_thread(checkpoint_metrics, worker.url)
    finally:
        worker.stop()
    checkpoints = float(metrics.get("ubscore_checkpoints_total", "0"))
    inputs = float(metrics.get("ubscore_checkpoint_inputs_total", "0"))
    print(f"backlog of {len(messages)} operations, {USERS} users, {PARTITIONS} partitions, one ledger worker")
    rate, batch = len(messages) / (done - start), inputs / max(checkpoints, 1)
    print(f"ops/s {rate:.0f}  checkpoints {checkpoints:.0f}  mean batch {batch:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
