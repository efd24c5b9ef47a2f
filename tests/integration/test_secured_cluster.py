"""The secured stack refuses whoever it should, and its least-privileged producer can do its one job.

These run against ``stack/bin/stack up --secure`` (``make test-secure`` sources
.stack/secure/env); on the plain stack they are not collected (tests/integration/conftest.py).
Each refusal is the broker's or the database's own: a client that the cluster
lets in where it should not makes the test fail.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Dict, List

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from app.kafka_clients import security_options
from app.partitioning import user_key
from app.settings import load
from app.sink.cql import new_cluster

from .harness import BOOTSTRAP, SECURE_HOME, Worker, World, allow_producer, events_of, fresh_user_id, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.secured]

#: How long a refused client may try before the test calls it refused (the broker answers at once).
REFUSAL_S = 20.0


def kafka_login(**overrides: str) -> Dict[str, Any]:
    """aiokafka's security keywords for this stack's settings with ``overrides`` (UBS_KAFKA_* names)."""
    env = {name: value for name, value in os.environ.items() if name.startswith("UBS_KAFKA")}
    env.update(overrides)
    env = {name: value for name, value in env.items() if value}
    return security_options(load(env))


def producer_login() -> Dict[str, Any]:
    """The login of the principal that may only write operations (STACK_PRODUCER_* of .stack/secure/env)."""
    return kafka_login(
        UBS_KAFKA_SASL_USERNAME=os.environ["STACK_PRODUCER_USERNAME"],
        UBS_KAFKA_SASL_PASSWORD=os.environ["STACK_PRODUCER_PASSWORD"],
        UBS_KAFKA_SSL_CERTFILE="",
        UBS_KAFKA_SSL_KEYFILE="",
    )


async def refused_producer(options: Dict[str, Any]) -> None:
    """A producer with ``options`` cannot even start: the broker does not let it in."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000, **options)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), REFUSAL_S)
    finally:
        await producer.stop()


def test_the_tests_run_on_the_secured_stack() -> None:
    assert SECURE_HOME is not None and load().kafka_security_protocol == "SASL_SSL"


async def test_a_plaintext_client_is_refused() -> None:
    await refused_producer({"security_protocol": "PLAINTEXT"})


async def test_a_wrong_password_is_refused() -> None:
    await refused_producer(kafka_login(UBS_KAFKA_SASL_PASSWORD="not-the-password"))


async def test_an_anonymous_client_over_tls_is_refused() -> None:
    """TLS with the right CA and no SASL login: the SASL_SSL listener lets nobody in anonymously."""
    no_login = {f"UBS_KAFKA_SASL_{name}": "" for name in ("MECHANISM", "USERNAME", "PASSWORD")}
    await refused_producer(kafka_login(UBS_KAFKA_SECURITY_PROTOCOL="SSL", **no_login))


async def test_the_producer_principal_writes_operations_and_nothing_else(world: World, worker: Worker) -> None:
    operations = world.topic("balance.operations")
    await asyncio.to_thread(allow_producer, operations)
    user = fresh_user_id()
    deposit = {"op_id": "from-producer", "kind": "deposit", "user_id": user, "asset": 1, "amount": 75}
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", **producer_login())
    await producer.start()
    try:
        await producer.send_and_wait(operations, json.dumps(deposit).encode(), key=user_key(user))
        forged_credit = json.dumps({**deposit, "op_id": "forged"}).encode()
        for name in ("balance.credits", "balance.assets", "balance.events", "balance.operations.dlq"):
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(producer.send_and_wait(world.topic(name), forged_credit, key=b"1"), REFUSAL_S)
        with pytest.raises(TopicAuthorizationFailedError):
            changelog = f"{world.app_id}-accounts-changelog"
            await asyncio.wait_for(producer.send_and_wait(changelog, forged_credit, key=b"1"), REFUSAL_S)
    finally:
        await producer.stop()
    events = await read_topic(world.topic("balance.events"), until=lambda m: bool(events_of(m, [user])))
    (event,) = events_of(events, [user])
    assert (event["op_id"], event["status"], event["available"]) == ("from-producer", "accepted", 75)


async def test_the_producer_principal_cannot_read_events(world: World, worker: Worker) -> None:
    consumer = consumer_of(world.topic("balance.events"), f"{world.app_id}-reader")
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(_first_batch(consumer), REFUSAL_S)
    finally:
        await consumer.stop()


async def test_the_producer_principal_cannot_join_the_ledgers_group(world: World, worker: Worker) -> None:
    """Even on the one topic it may write (and describe), it cannot consume in the ledger's group."""
    operations = world.topic("balance.operations")
    await asyncio.to_thread(allow_producer, operations)
    consumer = consumer_of(operations, world.app_id)
    try:
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            await asyncio.wait_for(_first_batch(consumer), REFUSAL_S)
    finally:
        await consumer.stop()


def consumer_of(topic: str, group: str) -> AIOKafkaConsumer:
    """A consumer of ``topic`` in ``group``, logged in as the producer principal."""
    options = {"group_id": group, "auto_offset_reset": "earliest", "request_timeout_ms": 5000}
    return AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, **options, **producer_login())


async def _first_batch(consumer: AIOKafkaConsumer) -> List[Any]:
    await consumer.start()
    while True:
        batch = await consumer.getmany(timeout_ms=1000)
        if batch:
            return list(batch.values())


def cql_refused(**overrides: str) -> None:
    """A CQL client with this stack's settings and ``overrides`` (UBS_CQL_* names) cannot connect."""
    from cassandra.cluster import NoHostAvailable

    env = {name: value for name, value in os.environ.items() if name.startswith("UBS_CQL_")}
    env.update(overrides)
    cluster = new_cluster(load({name: value for name, value in env.items() if value}))
    try:
        with pytest.raises(NoHostAvailable):
            cluster.connect()
    finally:
        cluster.shutdown()


def test_the_database_refuses_a_wrong_password() -> None:
    cql_refused(UBS_CQL_PASSWORD="not-the-password")


def test_the_database_refuses_a_client_without_a_login() -> None:
    cql_refused(UBS_CQL_USERNAME="", UBS_CQL_PASSWORD="")


def test_the_database_refuses_a_client_without_tls() -> None:
    cql_refused(UBS_CQL_SSL_CAFILE="", UBS_CQL_SSL_CERTFILE="", UBS_CQL_SSL_KEYFILE="")


def test_the_database_refuses_a_client_without_a_certificate() -> None:
    cql_refused(UBS_CQL_SSL_CERTFILE="", UBS_CQL_SSL_KEYFILE="")
