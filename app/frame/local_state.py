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

A store can also be behind the changelog's log start: the records after its
offset were deleted (retention, ``kafka-delete-records``) while it was away. What
it holds then misses changes it can never read, so it is not trusted: the
partition is rebuilt from the log start. The rule is applied where every
partition's recovery begins (app.frame.bulk_recovery calls
``drop_behind_log_start``), at start and at every later assignment alike, so a
partition that comes back to a running worker is covered too; the store is open
there, so it is emptied in place (one ``local_table_dropped`` line) rather than
moved aside. Faust's own recovery would instead move the store's offset up to the
log start and keep its rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

import rocksdict
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP, CollectionT, TableT

from app.backoff import backoff
from app.frame.faust_internals import open_partition_db
from app.kafka_clients import new_consumer

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
    consumer = new_consumer(bootstrap, enable_auto_commit=False)
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


def behind_log_start(persisted: Optional[int], log_start: Optional[int]) -> bool:
    """Whether a store that applied up to ``persisted`` misses records its changelog no longer has."""
    return persisted is not None and persisted >= 0 and log_start is not None and persisted + 1 < log_start


def drop_behind_log_start(
    tables: Mapping[TP, CollectionT], tps: Iterable[TP], offsets: MutableMapping[TP, Any], log_starts: Mapping[TP, Any]
) -> List[TP]:
    """Empty every open store behind its changelog's log start; its recovery then reads from the log start.

    ``offsets`` holds the offsets the recovery reads from (the stores' own); a
    dropped partition's becomes None, as for a store that never had any.
    """
    dropped = []
    for tp in tps:
        persisted, log_start = offsets.get(tp), log_starts.get(tp)
        db = open_partition_db(tables[tp], tp.partition) if tp in tables else None
        if db is None or not behind_log_start(persisted, log_start):
            continue
        rows = _empty(db)
        offsets[tp] = None
        dropped.append(tp)
        log.warning(
            "local_table_dropped table=%s partition=%s persisted_offset=%s log_start=%s rows=%s "
            "reason=local_files_behind_log_start",
            tables[tp].name,
            tp.partition,
            persisted,
            log_start,
            rows,
        )
    return dropped


def _empty(db: Any) -> int:
    """Delete every key of an open store (rows and the recorded offset) in one write; the number deleted."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    rows = 0
    for key in db.keys():
        batch.delete(key)
        rows += 1
    db.write(batch)
    return rows
