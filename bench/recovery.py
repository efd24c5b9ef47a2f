"""How long a worker takes to become ready for N accounts, with and without its local RocksDB files.

For each N it writes N account rows straight into the accounts changelog of a
fresh world (what N users' deposits would have left there), then:

1. starts a worker on an empty data directory: it rebuilds every partition from
   the changelog (a new machine, a lost disk, a partition moving to a worker
   that never had it);
2. stops it cleanly and starts it again on the same directory: it opens its
   RocksDB files and reads only the changelog tail;
3. kills that one (SIGKILL) and starts it again on the same directory: the files
   are reopened as after a clean stop (docs/design.md, "Local state and recovery").

"Ready" is GET /health answering 200 with all partitions assigned and recovery
done. A sample of accounts is read back through the gateway to check the data.

    make bench-recovery                 # N = 100000 and 1000000
    BENCH_ACCOUNTS=20000 make bench-recovery
    BENCH_QUICK=1 python -m bench.recovery    # N = 20000
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.partitioning import user_key
from tests.integration.harness import BOOTSTRAP, PARTITIONS, REPLICATION, Worker, World

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = [int(n) for n in (os.environ.get("BENCH_ACCOUNTS") or ("20000" if QUICK else "100000,1000000")).split(",")]


async def fill_changelog(world: World, accounts: int) -> List[int]:
    """Write ``accounts`` account rows into the world's accounts changelog; return the user ids."""
    topic = f"{world.app_id}-accounts-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, REPLICATION, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    users = list(range(10_000_000, 10_000_000 + accounts))
    try:
        pending = []
        for user in users:
            value = {
                "seq": 1,
                "balances": {"1": {"available": user % 100_000 + 1, "locked": 0}},
                "applied": {"operations": 0},
            }
            pending.append(await producer.send(topic, key=user_key(user), value=json.dumps(value).encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return users


async def time_to_ready(worker: Worker) -> float:
    start = time.monotonic()
    worker.start()
    await asyncio.to_thread(worker.wait_ready, PARTITIONS, 1800)
    return time.monotonic() - start


async def check_sample(worker: Worker, users: List[int]) -> None:
    async with aiohttp.ClientSession() as http:
        for user in random.Random(1).sample(users, 50):
            async with http.get(f"{worker.url}/accounts/{user}") as response:
                body = await response.json()
                assert body["balances"]["1"]["available"] == user % 100_000 + 1, body


async def measure(accounts: int) -> Tuple[float, float, float, float]:
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-recovery-"))
    start = time.monotonic()
    users = await fill_changelog(world, accounts)
    fill_s = time.monotonic() - start
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn")
    rebuild_s = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop()
    worker = Worker(world, base / "data", base / "worker2.log", loglevel="warn")
    local_s = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop(signal.SIGKILL)
    worker = Worker(world, base / "data", base / "worker3.log", loglevel="warn")
    killed_s = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop()
    return fill_s, rebuild_s, local_s, killed_s


async def run() -> Dict[str, Any]:
    """Each size in turn, printed as a table; the rows as a dict for bench.run."""
    columns = (
        ("fill changelog s", 18),
        ("ready, no local files s", 26),
        ("after clean stop s", 20),
        ("after SIGKILL s", 17),
    )
    print(f"{'accounts':>10}" + "".join(f"{name:>{width}}" for name, width in columns))
    rows = []
    for accounts in SIZES:
        fill_s, rebuild_s, local_s, killed_s = await measure(accounts)
        print(f"{accounts:>10}{fill_s:>18.1f}{rebuild_s:>26.1f}{local_s:>20.1f}{killed_s:>17.1f}", flush=True)
        rows.append(
            {"accounts": accounts, "fill_s": fill_s, "rebuild_s": rebuild_s, "reopen_s": local_s, "killed_s": killed_s}
        )
    return {"rows": rows}


if __name__ == "__main__":
    asyncio.run(run())
