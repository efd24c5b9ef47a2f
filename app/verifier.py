"""``ubscore verify``: read what the pipeline wrote and check the invariants of DESIGN.md.

Run it once the pipeline is idle (no operation in flight). It reads
``balance.operations`` and ``balance.events`` (read_committed) to their current
end, the tables through a worker's HTTP API (which routes to the owner of each
user) and the database, then calls ``app.verification.check``. It prints a
summary and exits 1 on any violation, 2 when something could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.settings import Settings, load
from app.verification import Report, check

Record = Tuple[Optional[bytes], bytes]


async def read_topic(bootstrap: str, topic: str) -> List[Record]:
    """Every committed message of a topic up to the end seen at start, partition by partition in offset order."""
    # auto_offset_reset="earliest" and explicit seeks: with the default ("latest") aiokafka can
    # resolve a freshly assigned partition's position to the end before seek_to_beginning takes
    # effect, and the read comes back empty (seen in a CI run and in the fault-injection suite).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        # A consumer without subscriptions tracks no topic's metadata: ask for this one,
        # and ask again if the answer came from a refresh already under way without it.
        await consumer._client.add_topic(topic)
        for _ in range(50):
            if consumer.partitions_for_topic(topic):
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        per_partition: Dict[int, List[Tuple[int, Record]]] = {p: [] for p in partitions}
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=10000)
            for tp, records in batch.items():
                per_partition[tp.partition].extend((r.offset, (r.key, r.value)) for r in records if r.offset < ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return [record for p in partitions for _, record in sorted(per_partition[p], key=lambda item: item[0])]
    finally:
        await consumer.stop()


async def read_tables(
    worker_url: str, users: Sequence[int], concurrency: int = 32
) -> Dict[int, Optional[Dict[str, Any]]]:
    """Each user's account as the owning worker's table holds it (404 -> None)."""
    limit = asyncio.Semaphore(concurrency)
    tables: Dict[int, Optional[Dict[str, Any]]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(user: int) -> None:
            async with limit:
                async with http.get(f"{worker_url}/accounts/{user}") as response:
                    if response.status == 404:
                        tables[user] = None
                        return
                    response.raise_for_status()
                    body = await response.json()
                    tables[user] = {"seq": body["seq"], "balances": body["balances"]}

        await asyncio.gather(*(one(user) for user in users))
    return tables


def read_database(settings: Settings) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """All rows of balance_events and balances in the keyspace."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy
    from cassandra.query import dict_factory

    from app.cql import PROTOCOL_VERSION, _epoch_ms

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), row_factory=dict_factory, request_timeout=60)
    cluster = Cluster(
        list(settings.cql_hosts),
        port=settings.cql_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=PROTOCOL_VERSION,
    )
    try:
        session = cluster.connect(settings.keyspace)
        events = []
        for row in session.execute("SELECT * FROM balance_events"):
            row["ts"] = _epoch_ms(row["ts"])
            events.append(row)
        balances = list(session.execute("SELECT user_id, asset, available, locked, seq FROM balances"))
        return events, balances
    finally:
        cluster.shutdown()


async def verify(settings: Settings, worker_url: Optional[str], with_database: bool) -> Report:
    """Read everything and check it."""
    operations = await read_topic(settings.kafka_bootstrap, settings.topic_name("balance.operations"))
    event_records = await read_topic(settings.kafka_bootstrap, settings.topic_name("balance.events"))
    events = [json.loads(value) for _, value in event_records]
    users = sorted({int(e["user_id"]) for e in events})
    tables: Optional[Mapping[int, Optional[Dict[str, Any]]]] = None
    if worker_url:
        tables = await read_tables(worker_url, users)
    db_events = db_balances = None
    if with_database:
        db_events, db_balances = await asyncio.get_running_loop().run_in_executor(None, read_database, settings)
    return check(operations, events, tables, db_events, db_balances, settings.max_body_bytes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``ubscore verify``."""
    parser = argparse.ArgumentParser(prog="ubscore verify", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker", default=None, help="a worker's URL to read the tables through (default: this host's UBS_WEB_PORT)"
    )
    parser.add_argument("--no-tables", action="store_true", help="do not compare the tables")
    parser.add_argument("--no-db", action="store_true", help="do not compare the database")
    args = parser.parse_args(argv)
    settings = load()
    worker_url = None if args.no_tables else (args.worker or settings.canonical_url)
    try:
        report = asyncio.run(verify(settings, worker_url, not args.no_db))
    except Exception as exc:  # noqa: BLE001 - any read failure ends the run with a clear line
        print(f"verify: could not read the pipeline's state: {exc!r}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1
