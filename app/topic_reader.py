"""The one way UBSCore reads a topic outside Faust: a plain aiokafka consumer with no group.

It commits nothing and joins no group, so reading never moves anyone's offsets or
partitions. Three readers use it: the hole filler (one partition, a range of
offsets), the verifier (whole topics to their current end) and the tests (until
a condition holds).

Every partition is positioned explicitly (``seek``): with aiokafka's default reset
a freshly assigned partition can resolve to its end before a seek to the
beginning takes effect, and the read comes back empty.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable, List, Mapping, Optional

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from app.frame.faust_internals import refresh_topic_metadata
from app.kafka_clients import new_consumer

Until = Callable[[List[ConsumerRecord]], bool]
POLL_MS = 500


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: Optional[Iterable[int]] = None,
    start: Optional[Mapping[int, int]] = None,
    end: Optional[Mapping[int, int]] = None,
    until: Optional[Until] = None,
    limit: Optional[int] = None,
    timeout_s: float = 60.0,
) -> List[ConsumerRecord]:
    """Committed records of ``topic``, each partition in offset order.

    From ``start`` (default: the beginning) to ``end`` (exclusive; default: the end
    offsets when the read begins), or, with ``until``, for as long as ``until`` is
    false over everything read so far (checked after every poll, never before the
    first). With ``limit``, it stops once that many records are read (it may read a
    few more). Raises TimeoutError when ``timeout_s`` pass first.
    """
    consumer = new_consumer(
        bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        return await asyncio.wait_for(_read(consumer, topic, partitions, start, end, until, limit), timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f} s") from None
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: Optional[Iterable[int]],
    start: Optional[Mapping[int, int]],
    end: Optional[Mapping[int, int]],
    until: Optional[Until],
    limit: Optional[int] = None,
) -> List[ConsumerRecord]:
    tps = [TopicPartition(topic, p) for p in sorted(partitions or await _partitions(consumer, topic))]
    consumer.assign(tps)
    firsts = await consumer.beginning_offsets(tps)
    lasts = end if end is not None else {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    for tp in tps:
        consumer.seek(tp, (start or {}).get(tp.partition, firsts[tp]))
    seen: List[ConsumerRecord] = []  # in the order polled, for ``until``
    while True:
        batch = await consumer.getmany(*tps, timeout_ms=POLL_MS)
        for tp, polled in batch.items():
            seen.extend(r for r in polled if until is not None or r.offset < lasts[tp.partition])
        if until is not None:
            done = until(seen)
        else:
            done = (limit is not None and len(seen) >= limit) or await _all_reached(consumer, tps, lasts)
        if done:
            return sorted(seen, key=lambda record: (record.partition, record.offset))


async def _all_reached(consumer: AIOKafkaConsumer, tps: List[TopicPartition], lasts: Mapping[int, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < lasts[tp.partition]:
            return False
    return True


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> List[int]:
    """The topic's partitions, waiting for it to exist (the caller's timeout bounds the wait)."""
    while True:
        known = consumer.partitions_for_topic(topic)
        if known:
            return sorted(known)
        await refresh_topic_metadata(consumer, topic)
        await asyncio.sleep(0.2)
