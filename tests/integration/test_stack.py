"""Smoke tests of the local stack: a real Kafka broker and a real CQL database answer.

They need the stack to be running (``stack/bin/stack up``, or ``make stack-up``) and use only
fresh names (a new topic, consumer group and keyspace per run), so they can run against a stack
that other tests or a worker are using. Addresses come from the app's settings variables:
``UBS_KAFKA`` (default: the brokers of this clone's stack), ``UBS_CQL_HOSTS`` (default ``127.0.0.1``)
and ``UBS_CQL_PORT`` (default ``9042``), with the security settings of the secured stack's env when it is sourced.
"""

import asyncio
import uuid

import pytest
from aiokafka.admin import NewTopic

from app.kafka_clients import new_admin_client, new_consumer, new_producer
from app.sink.cql import new_cluster

from .harness import BOOTSTRAP, CQL_HOSTS, CQL_PORT, CQL_SETTINGS, REPLICATION

KAFKA_TIMEOUT_S = 30
pytestmark = pytest.mark.integration

HINT = "is the local stack running? start it with: stack/bin/stack up"


@pytest.mark.asyncio
async def test_kafka_round_trip_through_a_fresh_topic() -> None:
    """A message produced to a newly created topic is consumed back by a new consumer group."""
    bootstrap = BOOTSTRAP
    topic = f"stack-test-{uuid.uuid4().hex}"
    group = f"stack-test-{uuid.uuid4().hex}"
    key, value = b"1001", b'{"op_id": "smoke", "kind": "deposit"}'

    admin = new_admin_client(bootstrap, request_timeout_ms=KAFKA_TIMEOUT_S * 1000)
    try:
        await asyncio.wait_for(admin.start(), KAFKA_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - re-raised with a hint
        await admin.close()
        raise AssertionError(f"cannot reach Kafka at {bootstrap}: {exc!r}; {HINT}") from exc
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=REPLICATION)])

        producer = new_producer(bootstrap, acks="all")
        await producer.start()
        try:
            sent = await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), KAFKA_TIMEOUT_S)
        finally:
            await producer.stop()

        consumer = new_consumer(
            bootstrap,
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), KAFKA_TIMEOUT_S)
            await consumer.commit()
        finally:
            await consumer.stop()

        assert (record.topic, record.partition, record.offset) == (topic, sent.partition, sent.offset)
        assert (record.key, record.value) == (key, value)
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


def test_cql_round_trip_in_a_fresh_keyspace() -> None:
    """A row written to a table of a newly created keyspace is read back, then the keyspace is dropped."""
    hosts, port = CQL_HOSTS, CQL_PORT
    keyspace = f"stack_test_{uuid.uuid4().hex[:16]}"
    cluster = new_cluster(CQL_SETTINGS)
    try:
        try:
            session = cluster.connect()
        except Exception as exc:  # noqa: BLE001 - re-raised with a hint
            raise AssertionError(f"cannot reach CQL at {hosts}:{port}: {exc!r}; {HINT}") from exc
        release = session.execute("SELECT release_version FROM system.local").one()
        assert release is not None and release.release_version

        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
        try:
            session.execute(
                f"CREATE TABLE {keyspace}.balances (user_id bigint, asset int, available bigint, locked bigint,"
                " PRIMARY KEY ((user_id), asset))"
            )
            insert = session.prepare(
                f"INSERT INTO {keyspace}.balances (user_id, asset, available, locked) VALUES (?, ?, ?, ?)"
            )
            session.execute(insert, (1001, 1, 2**62, 0))
            select = f"SELECT asset, available, locked FROM {keyspace}.balances WHERE user_id = %s"
            rows = list(session.execute(select, (1001,)))
            assert [(r.asset, r.available, r.locked) for r in rows] == [(1, 2**62, 0)]
        finally:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        keyspaces = {r.keyspace_name for r in session.execute("SELECT keyspace_name FROM system_schema.keyspaces")}
        assert keyspace not in keyspaces
    finally:
        cluster.shutdown()
