"""Throughput of UBSCore end to end, side by side with raw baselines, in one run.

All run in one invocation against the same local broker and database, on fresh topics
and keyspaces, over the same workload (deposits, withdrawals, locks, unlocks, transfers
across partitions):

- B1: a bare aiokafka consumer -> producer loop copying N messages from one
  8-partition topic to another: the ceiling the broker and the Python client allow;
- B2: B1 plus a rocksdict get and put, a changelog record and an event per operation
  (bench/baselines.py): the floor of any stateful Python step on Kafka and RocksDB;
- ubscore: one ledger worker (``UBS_ROLE=ledger``) applying the N operations, then two; then
  one again with a sink process (``UBS_ROLE=sink``) settling the events into the database;
- B3: the same events' rows inserted with cassandra-driver's prepared statements,
  32 in flight: the ceiling of any sink on this driver;
- ubscore's sink alone: one worker settling those events put straight on
  balance.events while its ledger has nothing to do.

The machine's two cores also run Kafka and Cassandra: a ledger worker competes with
them, and with the sink process, for CPU.

Figures: messages per second from the first message produced to the last one out,
and each as a ratio to the baseline it is measured against (the machine is shared
and noisy: compare ratios within one run, not absolute rates across runs).

    python -m bench.pipeline                 # defaults: 20000 operations, 1000 users
    BENCH_OPS=50000 python -m bench.pipeline
    python -m bench.pipeline --json /tmp/figures.json

``make bench`` runs it with the latency and recovery benchmarks (bench/run.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from app.core.models import Event
from app.kafka_clients import new_admin_client, new_consumer, new_producer
from app.partitioning import user_key
from app.topic_reader import read_topic
from bench.baselines import cql_inserts, pass_through, settlement_events, stateful
from tests.integration.harness import BOOTSTRAP, CQL_SETTINGS, PARTITIONS, REPLICATION, Worker, World, workload

OPS = int(os.environ.get("BENCH_OPS", "20000"))  # fewer make B1 a measure of start-up, not of rate
USERS = int(os.environ.get("BENCH_USERS", "1000"))


async def produce_all(topic: str, messages: List[Tuple[Optional[bytes], bytes]]) -> None:
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count_until(topic: str, target: int, timeout: float) -> float:
    """Read a topic from the start until ``target`` messages were seen; return the monotonic time."""
    await read_topic(BOOTSTRAP, topic, until=lambda records: len(records) >= target, timeout_s=timeout)
    return time.monotonic()


async def create_topics(names: List[str]) -> None:
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, REPLICATION) for name in names])
    finally:
        await admin.close()


async def baseline(messages: List[Tuple[Optional[bytes], bytes]]) -> float:
    tag = World().tag
    source, target = f"bench-{tag}.in", f"bench-{tag}.out"
    await create_topics([source, target])
    copier = asyncio.create_task(pass_through(source, target, len(messages)))
    start = time.monotonic()
    await produce_all(source, messages)
    end = await count_until(target, len(messages), timeout=600)
    await copier
    return end - start


async def stateful_baseline(messages: List[Tuple[Optional[bytes], bytes]]) -> float:
    """B2 over the same workload: seconds from the first message produced to the last event out."""
    tag = World().tag
    source, events, changelog = f"bench-{tag}.in", f"bench-{tag}.events", f"bench-{tag}.changelog"
    await create_topics([source, events, changelog])
    step = asyncio.create_task(stateful(source, events, changelog, len(messages)))
    start = time.monotonic()
    await produce_all(source, messages)
    end = await count_until(events, len(messages), timeout=600)
    await step
    return end - start


async def sink_alone(events: List[Event]) -> float:
    """Seconds for one worker's sink to settle ``events`` put on balance.events while the ledger idles."""
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-sink-"))
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn").start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS, 180)
        encoded: List[Tuple[Optional[bytes], bytes]] = [
            (user_key(e.user_id), json.dumps(e.to_json()).encode()) for e in events
        ]
        start = time.monotonic()
        await produce_all(world.topic("balance.events"), encoded)
        while await asyncio.to_thread(database_rows, world) < len(events):
            if time.monotonic() - start > 900:
                raise TimeoutError("the sink did not settle the events")
            await asyncio.sleep(0.2)
        return time.monotonic() - start
    finally:
        worker.stop()


def database_rows(world: World) -> int:
    from app.sink.cql import new_cluster

    cluster = new_cluster(CQL_SETTINGS)
    try:
        session = cluster.connect()
        return int(session.execute(f"SELECT count(*) FROM {world.keyspace}.balance_events").one()[0])
    except Exception:  # noqa: BLE001 - keyspace not there yet
        return 0
    finally:
        cluster.shutdown()


async def ubscore(
    messages: List[Tuple[Optional[bytes], bytes]], ledgers: int, settle: bool
) -> Tuple[float, float, int]:
    """``ledgers`` workers of role ledger, and with ``settle`` a sink process: seconds to the last event and row.

    Without ``settle`` nothing else competes with the ledger for the machine, as in B1.
    """
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-"))
    ledger_env = {"UBS_ROLE": "ledger"}
    workers = [
        Worker(world, base / f"data-{i}", base / f"ledger-{i}.log", loglevel="warn", extra_env=ledger_env).start()
        for i in range(ledgers)
    ]
    sink_env = {"UBS_ROLE": "sink"}
    sink = Worker(world, base / "sink", base / "sink.log", loglevel="warn", extra_env=sink_env) if settle else None
    if sink is not None:
        sink.start()
    try:
        for worker in workers:
            await asyncio.to_thread(worker.wait_ready, None, 180)
        await asyncio.to_thread(wait_assigned, workers, PARTITIONS)
        transfers = sum(1 for _, v in messages if b'"transfer"' in v)
        start = time.monotonic()
        await produce_all(world.topic("balance.operations"), messages)
        # Transfers that were accepted add a transfer_in event; count what the workers report.
        minimum = len(messages)
        events_done = await count_until(world.topic("balance.events"), minimum, timeout=900)
        if sink is None:
            return events_done - start, 0.0, 0
        expected_rows = await _events_total(world, minimum, transfers)
        while await asyncio.to_thread(database_rows, world) < expected_rows:
            if time.monotonic() - start > 900:
                raise TimeoutError("database did not catch up")
            await asyncio.sleep(0.5)
        db_done = time.monotonic()
        return events_done - start, db_done - start, expected_rows
    finally:
        if sink is not None:
            sink.stop()
        for worker in workers:
            worker.stop()


def wait_assigned(workers: List[Worker], partitions: int, timeout: float = 180.0) -> None:
    """Until the workers together own every input partition once (the group has settled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        healths = [worker.health() or {} for worker in workers]
        settled = all(h.get("status") == "ok" and not h.get("rebalancing") for h in healths)
        if settled and sum(len(h.get("partitions", [])) for h in healths) == partitions:
            return
        time.sleep(0.5)
    raise TimeoutError("the workers did not settle on the partitions")


async def _events_total(world: World, minimum: int, transfers: int) -> int:
    """All events once transfers settled: wait until the count stops growing."""
    last, stable = -1, 0
    while stable < 3:
        consumer = new_consumer(BOOTSTRAP, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(world.topic("balance.events"), p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            total = sum(ends.values())
        finally:
            await consumer.stop()
        stable = stable + 1 if total == last else 0
        last = total
        await asyncio.sleep(0.5)
    return last


async def run() -> Dict[str, Any]:
    """Every pipeline and baseline over one workload, printed as a table; the rows as a dict for bench.run."""
    messages = workload(OPS, USERS, orders=False)
    n = len(messages)
    print(f"workload: {n} operations, {USERS} users, {PARTITIONS} partitions, broker {BOOTSTRAP}")
    base_s = await baseline(messages)
    stateful_s = await stateful_baseline(messages)
    events_s, _, _ = await ubscore(messages, ledgers=1, settle=False)
    events2_s, _, _ = await ubscore(messages, ledgers=2, settle=False)
    _, db_s, db_rows = await ubscore(messages, ledgers=1, settle=True)
    events = settlement_events(messages)
    cql_s = await asyncio.to_thread(cql_inserts, events)
    sink_s = await sink_alone(events)
    b1, b3 = n / base_s, len(events) / cql_s
    print()
    print(f"{'pipeline':<52}{'messages':>10}{'seconds':>10}{'msg/s':>10}{'ratio':>12}")
    rows: List[Dict[str, Any]] = []
    for name, count, seconds, against in (
        ("B1 aiokafka consume->produce", n, base_s, ("B1", b1)),
        ("B2 B1 + rocksdict get/put + changelog per op", n, stateful_s, ("B1", b1)),
        ("ubscore ledger, 1 worker: operations -> events", n, events_s, ("B1", b1)),
        ("ubscore ledger, 2 workers: operations -> events", n, events2_s, ("B1", b1)),
        ("ubscore 1 ledger + 1 sink: operations -> CQL rows", db_rows, db_s, ("B1", b1)),
        ("B3 cassandra-driver prepared inserts, 32 in flight", len(events), cql_s, ("B3", b3)),
        ("ubscore sink alone: balance.events -> CQL", len(events), sink_s, ("B3", b3)),
    ):
        rate = count / seconds
        print(f"{name:<52}{count:>10}{seconds:>10.2f}{rate:>10.0f}{rate / against[1]:>9.3f} {against[0]}")
        figures = {"messages": count, "seconds": seconds, "per_s": rate, "ratio": rate / against[1]}
        rows.append({"pipeline": name, "against": against[0], **figures})
    return {"operations": n, "users": USERS, "rows": rows}


if __name__ == "__main__":
    figures = asyncio.run(run())
    if sys.argv[1:2] == ["--json"]:  # bench.secure reads them
        Path(sys.argv[2]).write_text(json.dumps(figures, indent=2) + "\n")
