"""Retention on the real stack (issue 23): topic settings checked at start, rebuilds from the log start.

- Topics that exist before the worker, made with the broker's defaults (CreateTime,
  a week, the broker's byte limit), are corrected when it starts.
- A retention order that does not hold (credits kept for less than operations)
  stops the start, naming the setting.
- Records deleted from the start of the results changelog (``kafka-delete-records``,
  as retention would) do not make a rebuild in bulk start at the end: the rows
  after the deleted range are rebuilt, and a retry of their operations is answered
  with its first result.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import aiohttp
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.kafka_clients import new_admin_client, new_consumer
from app.partitioning import partition_for, user_key
from app.settings import load

from .harness import BOOTSTRAP, PARTITIONS, REPLICATION, REPO, Worker, World, fresh_user_id, operator_login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: What every topic that carries money must keep: twice the default results window, in ms.
KEPT_MS = str(2 * load({}).results_retention_s * 1000)
CHECKED = ("cleanup.policy", "retention.ms", "retention.bytes", "message.timestamp.type")


async def create_topics(specs: Mapping[str, Dict[str, str]]) -> None:
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, REPLICATION, topic_configs=c) for name, c in specs.items()]
        )
    finally:
        await admin.close()


async def topic_settings(names: List[str]) -> Dict[str, Dict[str, str]]:
    """The effective values of the checked settings of each topic, as the broker describes them."""
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    found: Dict[str, Dict[str, str]] = {}
    for response in responses:
        for error, _message, _kind, name, entries in response.resources:
            assert error == 0, (name, error)
            found[name] = {entry[0]: entry[1] for entry in entries if entry[0] in CHECKED}
    return found


def changelog(world: World, table: str) -> str:
    return f"{world.app_id}-{table}-changelog"


async def test_topics_made_with_the_broker_s_defaults_are_corrected_at_start(tmp_path: Path) -> None:
    world = World()
    operations, credits = world.topic("balance.operations"), world.topic("balance.credits")
    results, accounts = changelog(world, "results"), changelog(world, "accounts")
    await create_topics({operations: {}, credits: {}, results: {"cleanup.policy": "compact"}, accounts: {}})
    assert (await topic_settings([operations]))[operations]["message.timestamp.type"] == "CreateTime"

    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        found = await topic_settings([operations, credits, results, accounts])
    finally:
        worker.stop()
    for name in (operations, credits):
        assert found[name] == {
            "cleanup.policy": "delete",
            "retention.ms": KEPT_MS,
            "retention.bytes": "-1",
            "message.timestamp.type": "LogAppendTime",
        }, name
    assert {key: found[results][key] for key in ("retention.ms", "retention.bytes")} == {
        "retention.ms": KEPT_MS,
        "retention.bytes": "-1",
    }
    assert set(found[results]["cleanup.policy"].split(",")) == {"compact", "delete"}
    assert (found[accounts]["cleanup.policy"], found[accounts]["retention.bytes"]) == ("compact", "-1")
    log = worker.log_path.read_text()
    assert (
        f"topic_config_corrected topic={operations} name=message.timestamp.type from=CreateTime to=LogAppendTime"
    ) in log, worker.tail()


async def test_credits_kept_for_less_than_operations_stop_the_start(tmp_path: Path) -> None:
    world = World()
    operations, credits = world.topic("balance.operations"), world.topic("balance.credits")
    # Operations kept forever, credits for the required minimum: a leg could go before its operation.
    await create_topics({operations: {"retention.ms": "-1"}, credits: {"retention.ms": KEPT_MS}})
    worker = Worker(world, tmp_path / "data", tmp_path / "worker.log").start()
    try:
        assert worker.process is not None
        try:
            status = await asyncio.to_thread(worker.process.wait, 120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker started on credits kept for less than operations:\n{worker.tail()}")
        assert status != 0
        log = worker.log_path.read_text()
        assert "ConfigurationError" in log and f"{credits} " in log and "retention.ms" in log, worker.tail()
        assert worker.health() is None
    finally:
        worker.stop()


def delete_records(topic: str, partition: int, before: int, work: Path) -> None:
    """Kafka's own kafka-delete-records, from the stack's Kafka classpath, as an operator would run it."""
    spec = work / "delete.json"
    spec.write_text(json.dumps({"partitions": [{"topic": topic, "partition": partition, "offset": before}]}))
    script = 'source "$0/stack/libexec/common.sh" && run_kafka_tool org.apache.kafka.tools.DeleteRecordsCommand "$@"'
    command = ["bash", "-c", script, str(REPO), "--bootstrap-server", BOOTSTRAP, *operator_login()]
    command += ["--offset-json-file", str(spec)]
    subprocess.run(command, check=True, timeout=120, capture_output=True)


async def changelog_rows(topic: str, partition: int) -> Tuple[int, List[Tuple[int, bytes]]]:
    """The log start of one changelog partition, and its (offset, key) records."""
    consumer = new_consumer(BOOTSTRAP, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        start, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        rows: List[Tuple[int, bytes]] = []
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000)
            rows.extend((record.offset, record.key) for record in fetched.get(tp, []))
        return start, rows
    finally:
        await consumer.stop()


async def post(url: str, body: Dict[str, object]) -> Dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/operations", params={"wait": "true"}, data=json.dumps(body).encode()) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())


async def account(url: str, user: int) -> Dict[str, object]:
    """The account's answer but for ``applied_offset``, which every record of its partition moves, duplicates too."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/accounts/{user}") as response:
            return {name: value for name, value in (await response.json()).items() if name != "applied_offset"}


async def test_a_bulk_rebuild_starts_at_the_log_start_of_a_trimmed_changelog(tmp_path: Path) -> None:
    world = World()
    user = fresh_user_id()
    deposits = [
        {"op_id": f"dep-{n}", "kind": "deposit", "user_id": user, "asset": 1, "amount": n} for n in range(1, 31)
    ]
    first = Worker(world, tmp_path / "first", tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready, PARTITIONS)
        answers = {str(body["op_id"]): await post(first.url, body) for body in deposits}
        before = await account(first.url, user)
    finally:
        first.stop()

    results, partition = changelog(world, "results"), partition_for(user_key(user), PARTITIONS)
    _, rows = await changelog_rows(results, partition)
    offsets = {key.decode().rsplit("|", 1)[-1]: offset for offset, key in rows}
    cut = offsets["dep-16"]
    delete_records(results, partition, cut, tmp_path)
    log_start, rows = await changelog_rows(results, partition)
    assert log_start == cut and rows, (log_start, cut, rows)
    kept = sorted({key.decode().rsplit("|", 1)[-1] for _, key in rows} & set(answers))
    assert "dep-16" in kept and "dep-30" in kept and "dep-1" not in kept, kept

    shutil.rmtree(tmp_path / "first")  # no local files: every partition is rebuilt from the changelogs
    bulk = {"UBS_BULK_RECOVERY_MIN_RECORDS": "1"}
    again = Worker(world, tmp_path / "again", tmp_path / "again.log", extra_env=bulk, port=first.port).start()
    try:
        await asyncio.to_thread(again.wait_ready, PARTITIONS)
        assert "bulk_recovery topics=" in again.log_path.read_text(), again.tail()
        for op_id in kept:
            body = next(body for body in deposits if body["op_id"] == op_id)
            assert await post(again.url, body) == answers[op_id], op_id  # its first result, not a new one
        assert await account(again.url, user) == before  # nothing applied again
    finally:
        again.stop()
