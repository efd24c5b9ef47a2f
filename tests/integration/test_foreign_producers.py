"""Operations from producers that place keys their own way, or key them wrongly, are applied once.

librdkafka (kcat, confluent-kafka, Go, C#, Rust clients) partitions keys with CRC32 by
default, not Kafka's murmur2, so most of its operations land on a partition that does
not own their user. The agent moves each to the owning partition by number; a second
copy of an operation is deduplicated by op_id like any client retry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from typing import Any, Dict, List, Optional, Tuple

import aiohttp
import pytest

from app.kafka_clients import new_producer
from app.partitioning import partition_for, user_key

from .harness import BOOTSTRAP, PARTITIONS, Worker, World, events_of, fresh_user_id, read_topic, verify_eventually

pytestmark = pytest.mark.integration


def deposit(user: int, op_id: str, amount: int) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": amount}


def kcat(topic: str, lines: List[str], *options: str) -> None:
    """Produce ``key|value`` lines with kcat; CI installs it and sets UBS_REQUIRE_KCAT=1."""
    binary = shutil.which("kcat")
    if binary is None:
        if os.environ.get("UBS_REQUIRE_KCAT") == "1":
            pytest.fail("kcat is not installed (make tools)")
        pytest.skip("kcat is not installed (make tools installs it)")
    command = [binary, "-b", BOOTSTRAP, "-t", topic, "-P", "-K", "|", *options]
    subprocess.run(command, input="\n".join(lines) + "\n", text=True, check=True, timeout=60)


async def produce_at(topic: str, items: List[Tuple[Optional[bytes], bytes, int]]) -> None:
    """Produce each message to the partition given, as a producer with its own partitioner does."""
    producer = new_producer(BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for key, value, partition in items:
            await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


async def assert_applied_once(world: World, worker: Worker, expected: Dict[int, Dict[str, int]]) -> None:
    users = list(expected)
    wanted = {(user, op_id) for user, ops in expected.items() for op_id in ops}

    def results(found: List[Tuple[Optional[bytes], bytes]]) -> Dict[Tuple[int, str], List[Dict[str, Any]]]:
        by_op: Dict[Tuple[int, str], List[Dict[str, Any]]] = {}
        for event in events_of(found, users):
            by_op.setdefault((event["user_id"], event["op_id"]), []).append(event)
        return by_op

    found = results(await read_topic(world.topic("balance.events"), lambda m: wanted <= set(results(m)), timeout=90))
    for (user, op_id), copies in found.items():
        assert {json.dumps(c, sort_keys=True) for c in copies} == {json.dumps(copies[0], sort_keys=True)}
        assert (copies[0]["status"], copies[0]["amount"]) == ("accepted", expected[user][op_id]), copies
    async with aiohttp.ClientSession() as http:
        for user, ops in expected.items():
            async with http.get(f"{worker.url}/accounts/{user}") as response:
                account = await response.json()
            assert account["seq"] == len(ops)
            assert account["balances"]["1"]["available"] == sum(ops.values())
    report = await verify_eventually(worker)
    assert report.ok, report.summary()


@pytest.mark.parametrize("partitioner", ["default", "murmur2_random"])
async def test_kcat_operations_are_applied_once_whatever_its_partitioner(
    partitioner: str, world: World, worker: Worker
) -> None:
    users = [fresh_user_id() for _ in range(12)]
    expected = {user: {f"kcat-{n}": n + 1, f"kcat-{n}-b": 7} for n, user in enumerate(users)}
    lines = [
        f"{user}|{json.dumps(deposit(user, op_id, amount))}"
        for user in users
        for op_id, amount in expected[user].items()
    ]
    options = [] if partitioner == "default" else ["-X", f"partitioner={partitioner}"]
    kcat(world.topic("balance.operations"), lines + lines[:5], *options)  # five sent twice
    await assert_applied_once(world, worker, expected)


async def test_crc32_partitioned_and_foreign_keyed_operations_are_applied_once(world: World, worker: Worker) -> None:
    """librdkafka's rule computed here (CRC32 of the key), then keys that are not the user at all."""
    users = [fresh_user_id() for _ in range(16)]
    expected = {user: {f"crc-{n}": 10 + n} for n, user in enumerate(users)}
    items: List[Tuple[Optional[bytes], bytes, int]] = []
    for n, user in enumerate(users):
        value = json.dumps(deposit(user, f"crc-{n}", 10 + n)).encode()
        if n % 2:
            key: Optional[bytes] = user_key(user)
            partition = zlib.crc32(user_key(user)) % PARTITIONS
        else:
            key = f"order-{n}".encode() if n % 4 else None
            partition = (partition_for(user_key(user), PARTITIONS) + 1) % PARTITIONS
        items += [(key, value, partition), (key, value, partition)]  # a producer's retry: two copies
    moved = sum(1 for n, user in enumerate(users) if items[2 * n][2] != partition_for(user_key(user), PARTITIONS))
    assert moved >= len(users) // 2  # most of them really are off their user's partition
    await produce_at(world.topic("balance.operations"), items)
    await assert_applied_once(world, worker, expected)
