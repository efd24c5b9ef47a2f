"""How far UBSCore's two consumer groups are behind their input: end offset minus committed offset.

The ledger's group (``UBS_APP_ID``) reads ``balance.operations`` and
``balance.credits``; the sink's (``UBS_APP_ID-settlement``) reads
``balance.events``. Lag is read from Kafka itself, the group's committed offsets
against the partitions' end offsets, never from a worker's memory: what a
worker has fetched but not committed is work it has not finished, and a dead
worker's partitions must still show their lag. A partition where the group has
committed nothing yet counts from its first record (both groups start from the
earliest offset).

One reader serves the worker's metrics (``export_lag``) and ``ubscore lag``
(app.tools.cli.checks): one way to measure lag.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.frame.faust_internals import refresh_topic_metadata
from app.kafka_clients import new_admin_client, new_consumer
from app.observability import metrics
from app.settings import Settings

log = logging.getLogger(__name__)

#: The consumers UBSCore runs, by the name metrics and the command line show.
CONSUMERS = ("ledger", "sink")
#: A lag read that takes longer than this is abandoned (the broker is not answering).
READ_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PartitionLag:
    """One input partition of one consumer group."""

    consumer: str
    group: str
    topic: str
    partition: int
    #: The offset the next record will get.
    end: int
    #: The next offset the group will read; None when it committed nothing there yet.
    committed: Optional[int]
    #: The first offset Kafka still holds (where a group without a commit starts).
    beginning: int

    @property
    def lag(self) -> int:
        """Records written and not yet committed by the group."""
        position = self.committed if self.committed is not None else self.beginning
        return max(0, self.end - max(position, self.beginning))


def group_of(settings: Settings, consumer: str) -> Tuple[str, List[str]]:
    """The group id and input topics of ``ledger`` or ``sink``."""
    if consumer == "ledger":
        topics = [settings.topic_name("balance.operations"), settings.topic_name("balance.credits")]
        return settings.app_id, topics
    if consumer == "sink":
        return f"{settings.app_id}-settlement", [settings.topic_name("balance.events")]
    raise ValueError(f"consumer must be one of {', '.join(CONSUMERS)}, got {consumer!r}")


class LagReader:
    """Kafka clients kept open between reads (a worker reads every few seconds); ``close`` lets them go."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._admin: Optional[AIOKafkaAdminClient] = None
        self._offsets: Optional[AIOKafkaConsumer] = None

    async def read(
        self, settings: Settings, consumer: str, partitions: Optional[Iterable[Tuple[str, int]]] = None
    ) -> List[PartitionLag]:
        """The lag of every input partition of ``consumer``, or of the (topic, partition) pairs given."""
        group, topics = group_of(settings, consumer)
        admin, offsets = await self._started()
        if partitions is None:
            tps = [TopicPartition(topic, p) for topic in topics for p in await self._partitions(offsets, topic)]
        else:
            tps = [TopicPartition(topic, p) for topic, p in partitions]
        if not tps:
            return []
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await offsets.end_offsets(tps)
        beginnings = await offsets.beginning_offsets(tps)
        rows: List[PartitionLag] = []
        for tp in sorted(tps):
            mark = committed.get(tp)
            position = mark.offset if mark is not None and mark.offset >= 0 else None
            rows.append(PartitionLag(consumer, group, tp.topic, tp.partition, ends[tp], position, beginnings[tp]))
        return rows

    async def close(self) -> None:
        """Close the clients; a later read opens them again."""
        admin, offsets, self._admin, self._offsets = self._admin, self._offsets, None, None
        if offsets is not None:
            await offsets.stop()
        if admin is not None:
            await admin.close()

    async def _started(self) -> Tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            await self.close()
            admin = new_admin_client(self._bootstrap)
            offsets = new_consumer(self._bootstrap, group_id=None, enable_auto_commit=False)
            try:
                await admin.start()
                await offsets.start()
            except Exception:
                await offsets.stop()
                await admin.close()
                raise
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    @staticmethod
    async def _partitions(offsets: AIOKafkaConsumer, topic: str) -> List[int]:
        known = offsets.partitions_for_topic(topic)
        if not known:
            await refresh_topic_metadata(offsets, topic)
            known = offsets.partitions_for_topic(topic)
        return sorted(known or ())


async def read_lag(settings: Settings, consumers: Sequence[str] = CONSUMERS) -> Dict[str, List[PartitionLag]]:
    """Every input partition of each consumer, read once (``ubscore lag``)."""
    reader = LagReader(settings.kafka_bootstrap)
    try:
        return {consumer: await reader.read(settings, consumer) for consumer in consumers}
    finally:
        await reader.close()


async def export_lag(settings: Settings, consumer: str, owned: Callable[[], Iterable[Tuple[str, int]]]) -> None:
    """Every ``UBS_LAG_INTERVAL_S``, the lag of the partitions ``owned()`` names into /metrics; until cancelled.

    A failed read (Kafka away) keeps the last figures and tries again next time
    with fresh clients; the lag alert then rests on the figures that could be read.
    """
    reader = LagReader(settings.kafka_bootstrap)
    try:
        while True:
            await asyncio.sleep(settings.lag_interval_s)
            try:
                partitions = list(owned())
                rows = await asyncio.wait_for(reader.read(settings, consumer, partitions), READ_TIMEOUT_S)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                log.warning("lag_read_failed consumer=%s error=%r", consumer, exc)
                await reader.close()
                continue
            metrics.set_lag(consumer, [(row.topic, row.partition, row.lag) for row in rows])
    finally:
        await reader.close()
