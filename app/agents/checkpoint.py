"""The checkpoint of a batch: state to the changelogs, then to RocksDB, then the outputs.

The rules, each resting on the one before:

1. Local state is never ahead of the acknowledged changelog. A batch's rows are
   produced to the tables' changelog topics and acknowledged by all in-sync
   replicas before RocksDB receives them, in one write per table partition
   together with the changelog offset (Faust's own recovery path). A worker
   killed at any moment reopens its files and reads only the changelog tail.
2. A result row, and a hold row, is durable before the account row that
   records its offset. The result and hold rows are acknowledged first, then
   the accounts (with the expiries of the holds they open) and the cursors. A
   crash between the two leaves results beyond their accounts' offsets, which
   ``ledger.decide`` applies again from the same account, to the same result;
   the other order could leave an account that applied an operation with no
   result to answer its redelivery with, and it would be applied twice.
   Hold rows follow the same rule, because one user's state now spans records
   of two changelogs, which no produce writes atomically. Written with the
   accounts, a kill could leave an account without the hold rows it counts
   (money locked under holds no row holds: a redelivery only resends and
   cannot tell), or hold rows without their account (applied again on top of
   themselves). Written before, a row can only be ahead of its account, and
   such a row reads as the hold it replaced until its account applies the
   input that wrote it (app.core.hold_rows): the message is applied again from
   what its account knows. A hold that closed keeps a row without a hold until
   step 4, which deletes it once its account is durable; a crash before that
   leaves a row that reads as no hold, deleted when a message names it.
3. No output before the state it reports. Events, credit legs, moved operations
   and dead letters are produced only after every result and account row of
   the batch is acknowledged, on any number of brokers; the input is
   acknowledged to Faust (whose committer commits only acknowledged offsets)
   only after the outputs. A crash before that redelivers the input, which
   finds its results and is answered by resending (the redelivery rules of
   app.agents.ubscore).
4. An input partition's cursor moves only after the outputs (and the rows of
   holds closed in the batch are deleted then). The hole reader
   (app.guards.input_gaps) trusts every record up to the cursor to be fully
   done and reads back only what lies beyond it. A cursor written with the
   accounts would claim records whose outputs a crash then lost; when Faust
   also skipped those records on the next assignment, nothing would read them
   again and their events would never be sent.

A checkpoint that cannot complete leaves RocksDB behind Kafka, never ahead, but
this process's view of its tables is then unknown: the worker exits for its
supervisor (exit status 74) and the restart reads the changelog tail.

5. No write lands after the partitions may have moved. The group moves a
   worker's partitions no earlier than a session timeout after the last
   heartbeat it answered (app.frame.ownership), and the new owner rebuilds
   them from the changelogs as they are then. A write of this worker that
   reached the broker later would sit after the new owner's own writes, and
   the next rebuild would take it for the newest state. So every write of a
   checkpoint is begun only while the coordinator's last word still vouches
   for the partitions (``UBS_OWNERSHIP_BOUND_S``), and must be acknowledged
   while the latest word still vouches (heartbeats answered meanwhile count:
   the member was in the group, with its partitions, when it sent them);
   otherwise the worker exits at once
   (exit status 69), closing its connections, so that nothing it sent is
   retried later. The rest of the session timeout past the bound is the
   margin for a request already on the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, cast

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP, EventT, TableT
from faust.types.tuples import Message

from app.agents.batch import Batch, Record
from app.agents.waiters import account_waiters, waiters
from app.core.hold_rows import closed_hold
from app.exit_codes import ExitCode
from app.frame import failpoints, ownership
from app.kafka_clients import new_producer
from app.observability import metrics
from app.settings import settings
from app.tables import accounts, cursors, expiries, holds, results

log = logging.getLogger(__name__)


#: Bytes per produce batch of one partition; a larger record goes alone.
PRODUCE_BATCH_BYTES = 512 * 1024

#: Inputs checkpointed since this process started; the gateway's admission estimate takes its rate.
inputs_checkpointed = 0


class Publisher(Protocol):
    """Produces records and answers once every one is acknowledged."""

    async def publish(self, records: Sequence[Record]) -> List[int]:
        """The offsets the records were written at, in the order given."""

    async def stop(self) -> None:
        """Wait for what is in flight and let go of the connections; a later publish starts again."""


@dataclass
class _Open:
    builder: BatchBuilder
    indexes: List[int] = field(default_factory=list)


class KafkaPublisher:
    """A plain aiokafka producer that sends whole batches per partition, idempotent, acks from all replicas.

    Faust's producer buffer sends one message at a time; a checkpoint hands over
    hundreds of records at once, so they are packed into one batch per partition.
    Idempotence keeps a partition's records in order and single across the
    producer's own retries.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer: Optional[AIOKafkaProducer] = None
        self._starting = asyncio.Lock()

    async def publish(self, records: Sequence[Record]) -> List[int]:
        """Produce ``records`` and wait for every acknowledgement; raises if any is refused."""
        producer = await self._started()
        packed: List[Tuple[Tuple[str, int], _Open]] = []
        open_by_tp: Dict[Tuple[str, int], _Open] = {}
        for index, record in enumerate(records):
            tp = (record.topic, record.partition)
            current = open_by_tp.get(tp)
            if current is None or current.builder.append(key=record.key, value=record.value, timestamp=None) is None:
                current = open_by_tp[tp] = _Open(producer.create_batch())
                current.builder.append(key=record.key, value=record.value, timestamp=None)  # a first record always fits
                packed.append((tp, current))
            current.indexes.append(index)
        futures = [await producer.send_batch(part.builder, tp[0], partition=tp[1]) for tp, part in packed]
        acknowledged = await asyncio.gather(*futures)
        offsets = [0] * len(records)
        for (_, part), metadata in zip(packed, acknowledged, strict=True):
            for position, index in enumerate(part.indexes):
                offsets[index] = metadata.offset + position
        return offsets

    async def stop(self) -> None:
        """Wait for what is in flight, then close."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = new_producer(
                    self._bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    max_batch_size=PRODUCE_BATCH_BYTES,
                    max_request_size=2 * PRODUCE_BATCH_BYTES,
                )
                await producer.start()
                self._producer = producer
        return self._producer


publisher: Publisher = KafkaPublisher(settings.kafka_bootstrap)


class Checkpoints:
    """Checkpoints one batch at a time while the agent fills the next: the batch is what came in meanwhile.

    No timer decides a batch's size: under light load a batch holds the one
    message that arrived, and is checkpointed at once; under load it holds what
    arrived during the previous checkpoint, up to ``limit`` messages, after which
    the agent waits. Batches are checkpointed strictly in order, so a batch's
    rows and outputs follow the previous batch's.
    """

    def __init__(self, acknowledge: Callable[[Batch], Awaitable[None]], limit: int) -> None:
        self.open = Batch()
        self._acknowledge = acknowledge
        self._limit = limit
        self._has_input = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: Optional[asyncio.Future[None]] = None
        self._in_flight: Optional[asyncio.Future[None]] = None

    async def added(self) -> None:
        """The agent put one more input into the open batch; wait while that batch is full."""
        self._has_input.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        if self.open.inputs >= self._limit:
            self._room.clear()
            await self._room.wait()

    async def close(self) -> None:
        """Stop after the checkpoint in flight, which is never cut off; the open batch stays unacknowledged."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait([self._in_flight])
        await publisher.stop()

    async def _run(self) -> None:
        try:
            while True:
                await self._has_input.wait()
                self._has_input.clear()
                await self._checkpoint_open_batch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a checkpoint loop that stops would freeze every partition
            log.critical("checkpoint_loop_failed error=%r", exc)
            os._exit(ExitCode.CHECKPOINT_FAILED)

    async def _checkpoint_open_batch(self) -> None:
        batch, self.open = self.open, Batch()
        self.open.previous = batch
        batch.previous = None  # its predecessor is checkpointed: its rows are in the tables
        self._room.set()
        self._in_flight = asyncio.ensure_future(checkpoint(batch))
        await asyncio.shield(self._in_flight)
        if self.open.previous is batch:
            self.open.previous = None  # its rows are in the tables now
        await self._acknowledge(batch)


async def checkpoint(batch: Batch) -> None:
    """Make the batch durable and announce it (rules 1-4); exit the worker if Kafka refuses."""
    started = time.monotonic()
    try:
        await _write_rows(batch, results, holds)
        failpoints.hit("after_results", passes=batch.inputs)
        await _write_rows(batch, accounts, expiries)
        failpoints.hit("after_table_write", passes=batch.inputs)
        # After the accounts, not after the results alone: a client answered must read its own balance.
        waiters.wake(key for _, key, _ in batch.rows_of(results))
        account_waiters.wake(key for _, key, _ in batch.rows_of(accounts))
        if batch.outputs:
            await publish_owned(batch.outputs)
        announced = time.time()
        failpoints.hit("after_send", passes=batch.inputs)
        await _write_rows(batch, cursors, closed_holds=True)
    except Exception as exc:  # noqa: BLE001 - any failure leaves this process's table view unknown
        log.critical(
            "checkpoint_failed inputs=%s rows=%s outputs=%s error=%r",
            batch.inputs,
            len(batch.rows),
            len(batch.outputs),
            exc,
        )
        os._exit(ExitCode.CHECKPOINT_FAILED)
    global inputs_checkpointed
    inputs_checkpointed += batch.inputs
    metrics.CHECKPOINTS.inc()
    metrics.CHECKPOINT_INPUTS.inc(batch.inputs)
    metrics.CHECKPOINT_BATCH.observe(batch.inputs)
    metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - started)
    metrics.observe_latencies(metrics.APPLY_LATENCY, announced, batch.input_timestamps())


async def publish_owned(records: Sequence[Record]) -> List[int]:
    """Rule 5: ``publisher.publish``, begun and acknowledged while this worker still vouches for its partitions.

    Heartbeats answered during the write extend the time it may take: the
    acknowledgement only has to come while the latest word vouches.
    """
    tracker = ownership.tracker
    if tracker.vouched_for_s() > 0:
        sending = asyncio.ensure_future(publisher.publish(records))
        while not sending.done() and (left := tracker.vouched_for_s()) > 0:
            await asyncio.wait([sending], timeout=left)
        if sending.done():
            return sending.result()
        sending.cancel()
    log.critical(
        "worker_fenced reason=ownership_lapsed records=%s coordinator_silence_s=%.1f bound_s=%s action=exit status=%s",
        len(records),
        tracker.silence_s() or 0.0,
        tracker.bound_s,
        int(ExitCode.OWNERSHIP_LAPSED),
    )
    os._exit(ExitCode.OWNERSHIP_LAPSED)


async def _write_rows(batch: Batch, *tables: TableT, closed_holds: bool = False) -> None:
    """Rule 1 for some tables: their rows to the changelogs, and once all are acknowledged, to RocksDB.

    ``closed_holds`` adds the deletion of the batch's rows of closed holds, whose
    accounts are durable by then (rule 2).
    """
    changes = [_Change(table, *row) for table in tables for row in batch.rows_of(table)]
    if closed_holds:
        changes += [_Change(holds, p, key, None) for p, key, row in batch.rows_of(holds) if closed_hold(row)]
    if not changes:
        return
    offsets = await publish_owned([change.record for change in changes])
    for table in dict.fromkeys(change.table for change in changes):
        applied = [
            change.event(offset) for change, offset in zip(changes, offsets, strict=True) if change.table is table
        ]
        if applied:
            table.apply_changelog_batch(applied)


class _Change:
    """One changed row: its changelog record, and once acknowledged, the event Faust's recovery would apply."""

    def __init__(self, table: TableT, partition: int, key: bytes, value: Any) -> None:
        self.table = table
        self.value = value
        # A row set to None is deleted: a tombstone on the changelog, a delete in RocksDB.
        self.record = Record(_changelog(table), partition, key, None if value is None else _encode(value))

    def event(self, offset: int) -> EventT:
        record = self.record
        message = Message(
            topic=record.topic,
            partition=record.partition,
            offset=offset,
            timestamp=0.0,
            timestamp_type=0,
            headers=None,
            key=record.key,
            value=record.value,
            checksum=None,
            tp=TP(record.topic, record.partition),
        )
        # Table.apply_changelog_batch reads only these three attributes of an event.
        return cast(EventT, _ChangelogEvent(record.key, self.value, message))


@dataclass(frozen=True)
class _ChangelogEvent:
    key: Optional[bytes]
    value: Any
    message: Message


def _changelog(table: TableT) -> str:
    return table.changelog_topic.get_topic_name()


def _encode(value: Any) -> bytes:
    # The tables' value serializer is Faust's "json"; any JSON it can read back will do.
    return json.dumps(value, separators=(",", ":")).encode()
