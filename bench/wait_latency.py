"""Submit -> result latency of ``POST /operations?wait=true``, one request after another.

A closed loop (the next request starts when the previous one answered), so it
shows the time one operation spends in the pipeline at light load: produce,
fetch, decide, checkpoint, answer. It is not the open-loop latency under load;
that benchmark is still to be written (docs/batched-ledger-plan.md).

    python -m bench.wait_latency                    # 300 deposits on one ledger worker
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.integration.harness import PARTITIONS, Worker, World, fresh_user_id

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "300"))


async def main() -> None:
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-wait-"))
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn", extra_env={"UBS_ROLE": "ledger"})
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS, 180)
        user = fresh_user_id()
        timings = []
        async with aiohttp.ClientSession() as http:
            for i in range(REQUESTS + 20):
                body = {"op_id": f"w{i}", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1}
                start = time.perf_counter()
                async with http.post(f"{worker.url}/operations", params={"wait": "true"}, json=body) as response:
                    assert response.status == 200, await response.text()
                if i >= 20:  # the first requests warm the connections
                    timings.append((time.perf_counter() - start) * 1000)
    finally:
        worker.stop()
    cuts = statistics.quantiles(timings, n=100)
    print(f"{REQUESTS} sequential ?wait=true deposits on one ledger worker, milliseconds")
    print(f"p50 {cuts[49]:.1f}  p90 {cuts[89]:.1f}  p99 {cuts[98]:.1f}  max {max(timings):.1f}")


if __name__ == "__main__":
    asyncio.run(main())
