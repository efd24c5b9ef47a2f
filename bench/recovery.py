"""How long a worker takes to become ready for N accounts, with and without its local RocksDB files.

For each N it writes N account rows straight into the accounts changelog of a
fresh world (what N users' deposits would have left there), then, side by side:

0. the raw baseline: a plain aiokafka consumer reads the whole changelog, bytes
   as they are, and writes nothing;
1. starts a worker on an empty data directory, first with the bulk load off
   (Faust's recovery reads every record), then with the product's default (the
   partitions are loaded in bulk, app.frame.bulk_recovery): it rebuilds every
   partition from the changelog (a new machine, a lost disk, a partition moving
   to a worker that never had it). "records/s" is N over the time to ready,
   start-up included;
2. stops the second one cleanly and starts it again on the same directory: it opens its
   RocksDB files and reads only the changelog tail;
3. kills that one (SIGKILL) and starts it again on the same directory: the files
   are reopened as after a clean stop (docs/design.md, "Local state and recovery").

Steps 1 (bulk) to 3 run at one address, as one worker restarted: a static group
member gets its partitions back at once (docs/design.md, "Static membership").

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
from typing import Any, Dict, List

import aiohttp
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from app.kafka_clients import new_admin_client, new_consumer, new_producer
from app.partitioning import user_key
from app.settings import load
from tests.integration.harness import BOOTSTRAP, PARTITIONS, REPLICATION, Worker, World

QUICK = os.environ.get("BENCH_QUICK") == "1"
#: The bulk load off, and the product's default threshold.
FAUST_ONLY = {"UBS_BULK_RECOVERY_MIN_RECORDS": str(10**12)}
BULK = {"UBS_BULK_RECOVERY_MIN_RECORDS": str(load({}).bulk_recovery_min_records)}
SIZES = [int(n) for n in (os.environ.get("BENCH_ACCOUNTS") or ("20000" if QUICK else "100000,1000000")).split(",")]


async def fill_changelog(world: World, accounts: int) -> List[int]:
    """Write ``accounts`` account rows into the world's accounts changelog; return the user ids."""
    topic = f"{world.app_id}-accounts-changelog"
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, REPLICATION, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=20, max_batch_size=512 * 1024)
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


async def raw_read(world: World, accounts: int) -> float:
    """Seconds a plain consumer takes to read every record of the accounts changelog."""
    topic = f"{world.app_id}-accounts-changelog"
    consumer = new_consumer(BOOTSTRAP, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        start, seen = time.monotonic(), 0
        while seen < accounts:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += len(records)
        return time.monotonic() - start
    finally:
        await consumer.stop()


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


async def measure(accounts: int) -> Dict[str, float]:
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-recovery-"))
    start = time.monotonic()
    users = await fill_changelog(world, accounts)
    times = {"fill_s": time.monotonic() - start, "raw_read_s": await raw_read(world, accounts)}
    worker = Worker(world, base / "faust", base / "faust.log", loglevel="warn", extra_env=FAUST_ONLY)
    times["rebuild_faust_s"] = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop()
    port = worker.port  # one address: the same worker restarted, the same static group member
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn", extra_env=BULK, port=port)
    times["rebuild_s"] = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop()
    worker = Worker(world, base / "data", base / "worker2.log", loglevel="warn", extra_env=BULK, port=port)
    times["reopen_s"] = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop(signal.SIGKILL)
    worker = Worker(world, base / "data", base / "worker3.log", loglevel="warn", extra_env=BULK, port=port)
    times["killed_s"] = await time_to_ready(worker)
    await check_sample(worker, users)
    worker.stop()
    return times


#: Printed columns: (key of measure's dict, heading, width); records/s are derived from the times.
COLUMNS = (
    ("fill_s", "fill changelog s", 18),
    ("raw_read_s", "raw read s", 12),
    ("rebuild_faust_s", "ready, no files, Faust's recovery s", 37),
    ("rebuild_s", "ready, no files, bulk s", 25),
    ("reopen_s", "after clean stop s", 20),
    ("killed_s", "after SIGKILL s", 17),
)
RATES = (("raw_read_s", "raw rec/s"), ("rebuild_faust_s", "Faust rec/s"), ("rebuild_s", "bulk rec/s"))


async def run() -> Dict[str, Any]:
    """Each size in turn, printed as a table; the rows as a dict for bench.run."""
    print(
        f"{'accounts':>10}"
        + "".join(f"{name:>{width}}" for _, name, width in COLUMNS)
        + "".join(f"{name:>13}" for _, name in RATES)
    )
    rows = []
    for accounts in SIZES:
        times = await measure(accounts)
        rates = {f"{key[:-2]}_records_per_s": accounts / times[key] for key, _ in RATES}
        print(
            f"{accounts:>10}"
            + "".join(f"{times[key]:>{width}.1f}" for key, _, width in COLUMNS)
            + "".join(f"{rates[f'{key[:-2]}_records_per_s']:>13,.0f}" for key, _ in RATES),
            flush=True,
        )
        rows.append({"accounts": accounts, **times, **rates})
    return {"rows": rows}


if __name__ == "__main__":
    asyncio.run(run())
