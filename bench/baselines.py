"""Raw baselines for the benchmark: what plain Python clients do on this machine, beside the pipeline.

- B1 ``pass_through``: aiokafka consume -> produce, nothing else.
- B2 ``stateful``: B1 plus what a stateful step needs at the least, per operation:
  a rocksdict get and put of the user's row, a changelog record and an event, with
  offsets committed after each polled batch's sends are acknowledged. No
  validation, no idempotency: the floor under any Python ledger on Kafka and RocksDB.
- B3 ``cql_inserts``: the settlement rows of the same workload written with
  cassandra-driver's prepared statements, a bounded number in flight: the ceiling
  of any sink on this driver.

They are measured to be compared with the pipeline in the same run (ratios, not
absolute times: the machine is shared and noisy).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

from aiokafka import ConsumerRecord
from rocksdict import Options, Rdict

from app.core.ledger import Account, apply_operation
from app.core.models import Event, Operation, parse_operation
from app.kafka_clients import new_consumer, new_producer
from app.sink.cql import INSERT_EVENT, SCHEMA, event_row, keyspace_replication, new_cluster
from tests.integration.harness import BOOTSTRAP, CQL_SETTINGS

CQL_IN_FLIGHT = 32


Send = Tuple[str, bytes, bytes]


async def copy_loop(source: str, total: int, step: Callable[[ConsumerRecord], List[Send]]) -> None:
    """Consume ``source``; per record produce what ``step`` returns; commit each batch once its sends are acked."""
    consumer = new_consumer(
        BOOTSTRAP,
        source,
        group_id=f"bench-{source}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        done = 0
        while done < total:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            records = [record for polled in batch.values() for record in polled]
            sends = [await producer.send(topic, key=key, value=value) for r in records for topic, key, value in step(r)]
            await asyncio.gather(*sends)
            if records:
                await consumer.commit()
            done += len(records)
    finally:
        await producer.stop()
        await consumer.stop()


async def pass_through(source: str, target: str, total: int) -> None:
    """B1: consume, produce, commit; nothing else."""
    await copy_loop(source, total, lambda record: [(target, record.key, record.value)])


async def stateful(source: str, events: str, changelog: str, total: int) -> None:
    """B2: consume, read and write the user's row in RocksDB, produce its changelog record and an event."""
    store = Rdict(tempfile.mkdtemp(prefix="bench-b2-"), options=Options(raw_mode=True))

    def step(record: ConsumerRecord) -> List[Send]:
        row = _apply(store.get(record.key), json.loads(record.value))
        store[record.key] = row
        return [(changelog, record.key, row), (events, record.key, row)]

    try:
        await copy_loop(source, total, step)
    finally:
        store.close()


def _apply(stored: bytes | None, operation: Dict) -> bytes:
    row = json.loads(stored) if stored else {"seq": 0, "available": 0}
    row["seq"] += 1
    row["available"] += operation.get("amount", 0) if operation.get("kind") == "deposit" else 0
    return json.dumps(row).encode()


def settlement_events(messages: List[Tuple[Optional[bytes], bytes]]) -> List[Event]:
    """The events the pure core gives for the workload's operations, in order (no credit legs)."""
    accounts: Dict[int, Account] = {}
    events = []
    for _, raw in messages:
        operation = parse_operation(json.loads(raw))
        assert isinstance(operation, Operation)  # the benchmark workload has no trades
        outcome = apply_operation(accounts.get(operation.user_id, Account()), operation, 1_700_000_000_000)
        accounts[operation.user_id] = outcome.account
        assert outcome.event is not None  # a client operation always has its result
        events.append(outcome.event)
    return events


def cql_inserts(events: List[Event]) -> float:
    """B3: seconds to insert every event's row into a fresh keyspace, CQL_IN_FLIGHT at a time."""
    from cassandra.concurrent import execute_concurrent_with_args

    keyspace = f"bench_b3_{uuid.uuid4().hex[:10]}"
    cluster = new_cluster(CQL_SETTINGS, request_timeout_s=60)
    try:
        session = cluster.connect()
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = {keyspace_replication(CQL_SETTINGS)}")
        session.execute(SCHEMA[0].format(ks=keyspace))
        insert = session.prepare(INSERT_EVENT.format(ks=keyspace))
        rows = [event_row(event) for event in events]
        start = time.monotonic()
        execute_concurrent_with_args(session, insert, rows, concurrency=CQL_IN_FLIGHT, raise_on_first_error=True)
        elapsed = time.monotonic() - start
        session.execute(f"DROP KEYSPACE {keyspace}")
        return elapsed
    finally:
        cluster.shutdown()
