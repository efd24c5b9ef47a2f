"""Holes in the ledger's input: records Faust never handed to the agent, read back from Kafka.

Faust can skip input records and commit past them (docs/fault-injection.md,
findings 9 and 10; faust-streaming #216 and #221). The rule that catches it:
input topics here are neither compacted nor transactional under at_least_once,
so consecutive records of a partition have consecutive offsets, and a record
more than one offset past the last one applied on its partition means the
records in between were skipped.

The last applied offset per input partition lives in the changelog-backed
``cursors`` table, so a hole shows across restarts and rebalances too, including
one at the very start of an assignment. A partition without a cursor has had
nothing applied, so a first record past the partition's first offset is the end
of a hole too. The checkpoint writes a cursor only after
the outputs of the records it covers (app.agents.checkpoint, rule 4): everything
up to it is done, and only what lies beyond it needs reading back.
``read_range`` fetches the missing records with the plain reader of
app.topic_reader (no group, nothing committed), so the agent applies them, in
order, before the record that revealed the hole. A record at or below the
cursor is a redelivery and goes through the usual deduplication.
"""

from __future__ import annotations

from typing import List, Optional

from faust.types import TP
from faust.types.tuples import Message

from app.settings import settings
from app.topic_reader import read_topic

READ_TIMEOUT_S = 30.0


def cursor_key(topic: str, partition: int) -> bytes:
    """Key of an input partition in the ``cursors`` table."""
    return f"{topic}:{partition}".encode()


async def read_range(topic: str, partition: int, start: Optional[int], end: int, limit: int) -> List[Message]:
    """The first ``limit`` records of one partition at offsets [start, end), as Faust messages, in order.

    No start: from the partition's first record. A hole is read in chunks of a
    batch, so no read outlasts READ_TIMEOUT_S however large the hole.
    """
    if start is not None:
        end = min(end, start + limit)
    records = await read_topic(
        settings.kafka_bootstrap,
        topic,
        partitions=[partition],
        start={partition: start} if start is not None else None,
        end={partition: end},
        limit=limit,
        timeout_s=READ_TIMEOUT_S,
    )
    records = records[:limit]
    return [
        Message(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp / 1000.0,
            timestamp_type=record.timestamp_type,
            headers=record.headers,
            key=record.key,
            value=record.value,
            checksum=record.checksum,
            tp=TP(record.topic, record.partition),
        )
        for record in records
    ]
