"""The plain topic reader (app.topic_reader) and the hole filler's range read (app.guards.input_gaps), on the broker.

The verifier, the hole filler and most integration tests see Kafka through this
reader, so a reader that drops, repeats or reorders records would make all of them
wrong together. The topic here is created by the test (this broker does not create
topics on demand) and filled with records of known keys, values and timestamps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import NewTopic
from faust.types import TP

from app.guards.input_gaps import read_range
from app.kafka_clients import new_admin_client
from app.topic_reader import read_topic

from .harness import BOOTSTRAP, REPLICATION, World, produce

pytestmark = pytest.mark.integration

PARTITIONS = 8
RECORDS = 120


@dataclass
class Filled:
    """A topic of this module, what was produced to it, and when (epoch seconds)."""

    topic: str
    sent: List[Tuple[bytes, bytes]]
    produced_from_s: float
    produced_to_s: float


async def create_topic(topic: str) -> None:
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=REPLICATION)])
    finally:
        await admin.close()


async def delete_topic(topic: str) -> None:
    admin = new_admin_client(BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def filled() -> Iterator[Filled]:
    topic = World().topic("balance.operations")
    sent = [(f"user-{n}".encode(), json.dumps({"n": n}).encode()) for n in range(RECORDS)]
    asyncio.run(create_topic(topic))
    try:
        started = time.time()
        asyncio.run(produce(topic, sent))
        yield Filled(topic, sent, started, time.time())
    finally:
        asyncio.run(delete_topic(topic))


def by_partition(records: List[ConsumerRecord]) -> Dict[int, List[ConsumerRecord]]:
    grouped: Dict[int, List[ConsumerRecord]] = defaultdict(list)
    for record in records:
        grouped[record.partition].append(record)
    return grouped


def busiest(records: List[ConsumerRecord]) -> Tuple[int, List[ConsumerRecord]]:
    partition, held = max(by_partition(records).items(), key=lambda item: len(item[1]))
    return partition, held


async def test_a_read_to_the_end_returns_every_record_once_each_partition_in_offset_order(filled: Filled) -> None:
    records = await read_topic(BOOTSTRAP, filled.topic, timeout_s=30)
    assert sorted((r.key, r.value) for r in records) == sorted(filled.sent)
    grouped = by_partition(records)
    assert len(grouped) > 1  # the order below is checked across several partitions
    assert [r.partition for r in records] == sorted(r.partition for r in records)  # partition by partition
    sent_order = {key: n for n, (key, _) in enumerate(filled.sent)}
    for partition, held in grouped.items():
        assert [r.offset for r in held] == list(range(len(held))), partition
        assert [sent_order[r.key] for r in held] == sorted(sent_order[r.key] for r in held), partition


async def test_a_range_of_one_partition_is_exactly_start_to_end(filled: Filled) -> None:
    partition, held = busiest(await read_topic(BOOTSTRAP, filled.topic, timeout_s=30))
    assert len(held) >= 6
    ranged = await read_topic(
        BOOTSTRAP, filled.topic, partitions=[partition], start={partition: 2}, end={partition: 5}, timeout_s=30
    )
    assert [(r.partition, r.offset) for r in ranged] == [(partition, 2), (partition, 3), (partition, 4)]
    assert [(r.key, r.value) for r in ranged] == [(r.key, r.value) for r in held[2:5]]
    empty = await read_topic(
        BOOTSTRAP, filled.topic, partitions=[partition], start={partition: 3}, end={partition: 3}, timeout_s=30
    )
    assert empty == []
    tail = await read_topic(BOOTSTRAP, filled.topic, partitions=[partition], start={partition: 4}, timeout_s=30)
    assert [r.offset for r in tail] == list(range(4, len(held)))


async def test_until_is_checked_after_each_poll_and_never_before_the_first(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract of read_topic's docstring: a condition true of an empty read is asked only after a poll.

    It does not promise that the first poll brought anything, so a condition that
    holds for an empty list returns whatever that first poll got: possibly nothing.
    """
    polls: List[int] = []
    real_getmany = AIOKafkaConsumer.getmany

    async def counted(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        polls.append(1)
        return await real_getmany(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", counted)
    asked: List[Tuple[int, int]] = []

    def always(records: List[ConsumerRecord]) -> bool:
        asked.append((len(polls), len(records)))
        return True

    records = await read_topic(BOOTSTRAP, filled.topic, until=always, timeout_s=30)
    assert [polls_before for polls_before, _ in asked] == [1]  # asked once, after the first poll
    assert {(r.key, r.value) for r in records} <= set(filled.sent)
    assert asked[0][1] == len(records)


async def test_until_reads_past_the_end_the_read_began_with(filled: Filled) -> None:
    """With ``until``, records produced while the read is under way count too (the tests wait on events so)."""
    late = (b"late", b'{"late": true}')

    async def produce_later() -> None:
        await asyncio.sleep(1.5)
        await produce(filled.topic, [late])

    expected = len(filled.sent) + 1
    producing = asyncio.create_task(produce_later())
    records = await read_topic(
        BOOTSTRAP, filled.topic, until=lambda found: any(r.key == b"late" for r in found), timeout_s=30
    )
    await producing
    assert [(r.key, r.value) for r in records if r.key == b"late"] == [late]
    assert len(records) == expected
    filled.sent.append(late)  # the other tests of this module read the topic to its end


async def test_a_condition_never_met_times_out(filled: Filled) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=filled.topic):
        await read_topic(BOOTSTRAP, filled.topic, until=lambda found: False, timeout_s=2)
    assert 2 <= time.monotonic() - started < 10


async def test_a_topic_that_does_not_exist_times_out() -> None:
    with pytest.raises(TimeoutError):
        await read_topic(BOOTSTRAP, World().topic("never.created"), timeout_s=2)


async def test_read_range_gives_faust_messages_of_exactly_the_range(filled: Filled) -> None:
    partition, held = busiest(await read_topic(BOOTSTRAP, filled.topic, timeout_s=30))
    messages = await read_range(filled.topic, partition, 1, 4, 100)
    assert [m.offset for m in messages] == [1, 2, 3]
    for message, record in zip(messages, held[1:4], strict=True):
        assert (message.topic, message.partition, message.tp) == (filled.topic, partition, TP(filled.topic, partition))
        assert (message.key, message.value) == (record.key, record.value)
        assert message.timestamp == record.timestamp / 1000.0  # Faust's messages carry seconds
        assert filled.produced_from_s - 1 <= message.timestamp <= filled.produced_to_s + 1
        assert message.timestamp_type == record.timestamp_type
    assert await read_range(filled.topic, partition, 2, 2, 100) == []
    assert [m.offset for m in await read_range(filled.topic, partition, 1, 4, 2)] == [1, 2]
    assert [m.offset for m in await read_range(filled.topic, partition, None, 4, 2)] == [0, 1]
