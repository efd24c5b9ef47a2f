"""``ubscore tail USER``: one user's events as they are published, from balance.events.

A plain consumer without a group, assigned the user's partition only: reading
moves no one's offsets and joins no group. Events are keyed by user id, so the
user's events are those of its key on its partition (the value's user_id
decides when a key is missing).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Dict, Optional

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from app.kafka_clients import new_consumer
from app.partitioning import partition_for, user_key
from app.settings import Settings

#: How long the consumer may take to reach Kafka and position itself.
START_TIMEOUT_S = 15.0
POLL_MS = 500

Ready = Callable[[str, int, int], None]


async def follow(
    settings: Settings,
    user_id: int,
    show: Callable[[Dict[str, Any]], None],
    *,
    from_beginning: bool = False,
    limit: Optional[int] = None,
    ready: Optional[Ready] = None,
) -> int:
    """Hand each of the user's events to ``show`` until ``limit`` of them (for ever without one); how many."""
    topic = settings.topic_name("balance.events")
    tp = TopicPartition(topic, partition_for(user_key(user_id), settings.partitions))
    consumer = new_consumer(
        settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(START_TIMEOUT_S * 1000),
    )
    try:
        start = await asyncio.wait_for(_positioned(consumer, tp, from_beginning), START_TIMEOUT_S)
    except asyncio.TimeoutError:
        await consumer.stop()
        raise TimeoutError(f"Kafka at {settings.kafka_bootstrap} did not answer in {START_TIMEOUT_S:.0f} s") from None
    except BaseException:
        await consumer.stop()
        raise
    if ready is not None:
        ready(topic, tp.partition, start)
    try:
        return await _follow(consumer, tp, user_id, show, limit)
    finally:
        await consumer.stop()


async def _positioned(consumer: AIOKafkaConsumer, tp: TopicPartition, from_beginning: bool) -> int:
    await consumer.start()
    consumer.assign([tp])
    offsets = await (consumer.beginning_offsets([tp]) if from_beginning else consumer.end_offsets([tp]))
    consumer.seek(tp, offsets[tp])
    return int(offsets[tp])


async def _follow(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    user_id: int,
    show: Callable[[Dict[str, Any]], None],
    limit: Optional[int],
) -> int:
    shown = 0
    key = user_key(user_id)
    while limit is None or shown < limit:
        batch = await consumer.getmany(tp, timeout_ms=POLL_MS)
        for record in batch.get(tp, []):
            event = _event_of(record, key, user_id)
            if event is None:
                continue
            show(event)
            shown += 1
            if limit is not None and shown >= limit:
                break
    return shown


def _event_of(record: ConsumerRecord, key: bytes, user_id: int) -> Optional[Dict[str, Any]]:
    if record.key is not None and record.key != key:
        return None
    try:
        event = json.loads(record.value)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(event, dict) or event.get("user_id") != user_id:
        return None
    return event
