"""Local table files are reopened after any stop; files that do not match the cluster are set aside.

RocksDB receives a batch's rows only after their changelog records are
acknowledged (app.agents.checkpoint), so local files never hold a write that
Kafka lacks, whatever stopped the worker: SIGKILL, a crash, a fenced freeze. They
are at most behind the changelog, and Faust's recovery reads only the tail
after the offset each partition's store records.

Files can still disagree with the cluster they are opened against: its topics
were deleted and created again (``make stack-reset``), or the worker now points
at another cluster. A store that records a changelog offset at or beyond the
changelog's end holds a history the cluster does not have; Faust would refuse
it at every start (``ConsistencyError``). Such a store is moved aside, with one
log line, before any store opens, and that partition is rebuilt from what the
cluster has. The files are kept, not deleted, for whoever wants to look.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TableT

from app.backoff import backoff

log = logging.getLogger(__name__)

#: Suffix of a store moved aside, followed by the time it was moved (epoch seconds).
SET_ASIDE = ".set-aside-"

#: How long the check waits for a broker that does not answer before the start fails.
BROKER_WAIT_S = 120.0


async def set_aside_mismatched(tables: Iterable[TableT], partitions: int, bootstrap: str) -> List[Path]:
    """Move aside every local store whose recorded changelog offset is past its changelog's end."""
    stores = [(table, partition) for table in tables for partition in range(partitions) if _is_rocksdb(table)]
    local = {(table.name, partition): _persisted(table, partition) for table, partition in stores}
    present = {key: offset for key, offset in local.items() if offset is not None}
    if not present:
        return []
    ends = await _changelog_ends(
        [(table, partition) for table, partition in stores if (table.name, partition) in present], bootstrap
    )
    moved = []
    for table, partition in stores:
        offset = present.get((table.name, partition))
        end = ends.get((table.name, partition), 0)
        if offset is not None and offset >= end:
            moved.append(_move_aside(table, partition, offset, end))
    return moved


def _is_rocksdb(table: TableT) -> bool:
    return hasattr(table.data, "partition_path")


def _persisted(table: TableT, partition: int) -> Optional[int]:
    """The changelog offset a store records as applied, None when there is no store."""
    store = table.data
    path: Path = store.partition_path(partition)  # type: ignore[attr-defined]
    if not path.exists():
        return None
    db = store.rocksdb_options.open(path)  # type: ignore[attr-defined]
    try:
        raw = db.get(store.offset_key)  # type: ignore[attr-defined]
    finally:
        db.close()
    return int(raw) if raw is not None else None


async def _changelog_ends(stores: List[Tuple[TableT, int]], bootstrap: str) -> Dict[Tuple[str, int], int]:
    """The end offsets of the stores' changelog partitions; waits for a broker that is away, up to a limit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BROKER_WAIT_S
    for delay in backoff(0.5, 5.0):
        try:
            return await _changelog_ends_once(stores, bootstrap)
        except (KafkaError, OSError) as exc:
            if loop.time() > deadline:
                raise
            log.warning("changelog_ends_not_ready error=%r retry_in_s=%.1f", exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("backoff() never ends")


async def _changelog_ends_once(stores: List[Tuple[TableT, int]], bootstrap: str) -> Dict[Tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        wanted = {
            TopicPartition(table.changelog_topic.get_topic_name(), partition): (table.name, partition)
            for table, partition in stores
        }
        known = await consumer.topics()
        asked = [tp for tp in wanted if tp.topic in known]
        ends = await consumer.end_offsets(asked) if asked else {}
    finally:
        await consumer.stop()
    return {wanted[tp]: int(end) for tp, end in ends.items()}


def _move_aside(table: TableT, partition: int, offset: int, end: int) -> Path:
    path: Path = table.data.partition_path(partition)  # type: ignore[attr-defined]
    target = path.with_name(f"{path.name}{SET_ASIDE}{int(time.time())}")
    path.rename(target)
    log.error(
        "local_table_set_aside table=%s partition=%s persisted_offset=%s changelog_end=%s moved_to=%s "
        "reason=local_files_ahead_of_cluster",
        table.name,
        partition,
        offset,
        end,
        target,
    )
    return target
