"""Rebuilding a table partition far behind its changelog in bulk, before Faust's recovery reads the tail.

Faust's recovery hands every changelog record through its consumer, its
conductor, a queue and an event object before the store sees it: about 9,000
records/s here (docs/benchmarks.md, "Recovery"), so a worker without its local
files takes minutes for a few million accounts. The store itself takes a
partition's records as one RocksDB WriteBatch per fetch.

So when a recovery starts, each active changelog partition whose local store is
at least ``UBS_BULK_RECOVERY_MIN_RECORDS`` behind the highwater Faust just
measured is read first by a plain consumer of this module, with large fetches
and the records' bytes as they are, and written through the table's own
``apply_changelog_batch`` (the path of Faust's recovery and of the checkpoint:
one write per partition and fetch, with the changelog offset). Faust's recovery
then starts from the offset reached and reads only what remains. Only RocksDB
stores are loaded so: they keep the records' bytes as they are, where the
memory store keeps decoded values.

The rules:

- Local state never ahead of the changelog. Only what a consumer reads is
  written, and a consumer reads only below the high watermark: records every
  in-sync replica has. A load cut short (a rebalance cancels it, the budget runs
  out, the broker goes away) leaves a store that is a prefix of the changelog
  with its offset, which is what Faust's recovery continues from.
- From the log start. A partition is read from the record after its store's
  offset, or from the changelog's log start (its beginning offset) when that is
  later: retention or ``kafka-delete-records`` removed the records before it,
  so a fresh store starts there, never at 0. Should the log start move past the
  seek meanwhile, the consumer resets to the earliest record; a reset to the
  latest would skip the partition to its end and rebuild it empty.
- Never on top of an untrusted store. A store whose offset is behind the log
  start misses records it can no longer read; it is emptied before any load
  (app.frame.local_state, ``drop_behind_log_start``), for active and standby
  partitions, and rebuilt from the log start.
- One writer per partition. Faust fetches no changelog partition before it
  seeks them, after this step; the recovery watch holds still while it runs
  (``loading``), so its resume cannot start a second reader either.
- Bounded. The step runs inside Faust's recovery, where a wait longer than
  the broker request timeout stops the recovery for good, so it stops at
  ``LOAD_BUDGET_S`` and leaves the rest to Faust. The offsets applied are
  published as the load goes, so the recovery's progress is visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, Iterable, Mapping, MutableMapping, Optional, Set

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, CollectionT, ConsumerT

from app.frame.local_state import drop_behind_log_start
from app.kafka_clients import new_consumer
from app.settings import settings

log = logging.getLogger(__name__)

#: Longest a load runs; Faust's own wait around this step is the broker request timeout (90 s).
LOAD_BUDGET_S = 60.0

#: Fetch sizes of the loader: records of one partition come in runs of megabytes.
PARTITION_FETCH_BYTES = 4 * 1024 * 1024
FETCH_BYTES = 64 * 1024 * 1024

#: True while a load runs (app.guards.recovery_watch holds still meanwhile).
loading = False


class _Record:
    """A changelog record in the shape ``apply_changelog_batch`` reads: ``event.message.{tp, offset, key, value}``."""

    __slots__ = ("tp", "partition", "offset", "key", "value", "message")

    def __init__(self, tp: TP, offset: int, key: Optional[bytes], value: Optional[bytes]) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value
        self.message = self


class BulkFirstRecovery(Recovery):
    """Faust's recovery: stores behind the log start emptied, then far-behind partitions loaded in bulk."""

    async def _build_offsets(
        self, consumer: ConsumerT, tps: Set[TP], destination: MutableMapping[TP, Any], title: str
    ) -> None:
        if tps:
            log_starts = await consumer.earliest_offsets(*tps)
            drop_behind_log_start(self.tp_to_table, tps, destination, log_starts)
            if title == "active":
                await load_far_behind(self.tp_to_table, tps, destination, self.active_highwaters, log_starts)
        await super()._build_offsets(consumer, tps, destination, title)  # type: ignore[arg-type]


class UBSCoreTableManager(TableManager):
    """Faust's table manager with the bulk-first recovery (Faust's ``TableManager`` setting)."""

    @property
    def recovery(self) -> Recovery:
        """The recovery service of the tables."""
        if self._recovery is None:
            self._recovery = BulkFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def far_behind(
    tps: Iterable[TP],
    offsets: MutableMapping[TP, Any],
    highwaters: MutableMapping[TP, Any],
    minimum: int,
    log_starts: Optional[Mapping[TP, Any]] = None,
) -> Dict[TP, int]:
    """The partitions with at least ``minimum`` records beyond the offset applied, and the offset to read from.

    Reading starts after the offset applied, and never before the partition's log start.
    """
    starts: Dict[TP, int] = {}
    for tp in tps:
        offset, highwater = offsets.get(tp), highwaters.get(tp)
        log_start = (log_starts or {}).get(tp) or 0
        start = max(log_start, 0 if offset is None or offset < 0 else offset + 1)
        if highwater is not None and highwater - start + 1 >= minimum:
            starts[tp] = start
    return starts


async def load_far_behind(
    tables: MutableMapping[TP, CollectionT],
    tps: Set[TP],
    offsets: MutableMapping[TP, Any],
    highwaters: MutableMapping[TP, Any],
    log_starts: Mapping[TP, Any],
) -> None:
    """Load every far-behind partition up to its highwater, from its log start at the earliest; ``offsets`` follows."""
    global loading
    on_disk = {tp for tp in tps if isinstance(getattr(tables.get(tp), "data", None), RocksDBStore)}
    starts = far_behind(on_disk, offsets, highwaters, settings.bulk_recovery_min_records, log_starts)
    if not starts:
        return
    loading = True
    began = time.monotonic()
    consumer = new_consumer(
        settings.kafka_bootstrap,
        enable_auto_commit=False,
        # A seek below the log start (it moved since it was read) resumes at the first record, not the end.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES,
    )
    applied: Dict[TP, int] = {}
    try:
        await consumer.start()
        consumer.assign([TopicPartition(tp.topic, tp.partition) for tp in starts])
        for tp, start in starts.items():
            consumer.seek(TopicPartition(tp.topic, tp.partition), start)
        ends = {tp: int(highwaters[tp]) for tp in starts}
        await _read_until(consumer, tables, ends, offsets, applied, began + LOAD_BUDGET_S)
    except asyncio.CancelledError:
        raise  # a new rebalance: what is applied stays, the next recovery continues from it
    except Exception as exc:  # noqa: BLE001 - Faust's recovery reads whatever is left
        log.warning("bulk_recovery_failed error=%r", exc)
    finally:
        loading = False
        await consumer.stop()
        _report(starts, applied, time.monotonic() - began)


async def _read_until(
    consumer: AIOKafkaConsumer,
    tables: MutableMapping[TP, CollectionT],
    ends: Dict[TP, int],
    offsets: MutableMapping[TP, Any],
    applied: Dict[TP, int],
    deadline: float,
) -> None:
    """Fetch and apply until every partition reached its end offset (the last record's), or the deadline."""
    remaining = dict(ends)
    while remaining and time.monotonic() < deadline:
        fetched = await consumer.getmany(*(TopicPartition(tp.topic, tp.partition) for tp in remaining), timeout_ms=500)
        for kafka_tp, records in fetched.items():
            tp = TP(kafka_tp.topic, kafka_tp.partition)
            end = remaining.get(tp)
            if end is None:
                continue
            batch = [_Record(tp, r.offset, r.key, r.value) for r in records if r.offset <= end]
            if batch:
                tables[tp].apply_changelog_batch(batch)  # type: ignore[arg-type]  # reads only event.message
                offsets[tp] = batch[-1].offset
                applied[tp] = applied.get(tp, 0) + len(batch)
        for tp in list(remaining):
            position = await consumer.position(TopicPartition(tp.topic, tp.partition))
            if position > remaining[tp]:  # compaction can leave the last offsets without a record
                offsets[tp] = remaining.pop(tp)


def _report(starts: Dict[TP, int], applied: Dict[TP, int], seconds: float) -> None:
    total = sum(applied.values())
    log.info(
        "bulk_recovery topics=%s partitions=%s records=%s seconds=%.2f records_per_s=%.0f",
        ",".join(sorted({tp.topic for tp in starts})),
        len(starts),
        total,
        seconds,
        total / seconds if seconds > 0 else 0.0,
    )
