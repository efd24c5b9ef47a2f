"""The settlement sink: balance.events -> the CQL database, nothing lost, nothing rolled back.

Every worker of role ``all`` runs one sink inside its Faust app, and a worker of
role ``sink`` runs it alone (``run_alone``); either way it is a plain aiokafka
consumer in a consumer group of its own (``<app id>-settlement``), so Kafka
spreads the events partitions over the sinks like the ledger's. One step of the loop polls a batch, writes it with
``CqlStore.write_events`` and only then commits the offsets after the batch's
last records: an offset is never committed before the database acknowledged
every event below it. While the database is down the step keeps retrying the
same batch with capped exponential backoff (``ubscore_sink_paused`` is 1, lag
grows) and resumes where it stopped. A batch replayed after a crash or a
rebalance (its commit refused) rewrites the same rows: writes are idempotent.

Why not a Faust agent: around a rebalance Faust can deliver a record fetched
before the seek ahead of the records the seek re-reads, then drop those as
already read and count the skipped offsets as done (faust-streaming issues
#216, #221). For the sink that commits offsets of events never written; the
fault-injection suite lost settled events that way. aiokafka's own consumer
discards its prefetched records when partitions move and starts each newly
assigned partition at its committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from app.backoff import backoff
from app.core.models import Event, read_event
from app.errors import InvalidOperation, SettlementUnavailable
from app.kafka_clients import new_consumer
from app.observability import metrics
from app.observability.consumer_lag import export_lag
from app.settings import settings
from app.sink.cql import CqlStore
from app.topics import events_topic
from app.web import access, tls

log = logging.getLogger(__name__)

store = CqlStore(settings)

_running: List["SettlementSink"] = []


class Record(Protocol):
    """What the sink reads of a consumer record."""

    offset: int
    value: bytes
    #: Kafka's timestamp, milliseconds since the epoch.
    timestamp: int


class EventConsumer(Protocol):
    """The two consumer calls the sink makes (aiokafka's, or a test's stand-in)."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: Optional[int] = ...
    ) -> Any: ...

    async def commit(self, offsets: Optional[Mapping[TopicPartition, int]] = ...) -> None: ...


class SettlementSink(Service):
    """Starts the sink's consumer with the worker and runs the write-then-commit loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumer: Optional[AIOKafkaConsumer] = None

    async def on_start(self) -> None:
        """Join the sink's consumer group; the topic may not exist yet (the app creates it)."""
        self.consumer = new_consumer(
            settings.kafka_bootstrap,
            group_id=f"{settings.app_id}-settlement",
            client_id=f"{settings.app_id}-settlement",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=settings.sink_batch_size,
            metadata_max_age_ms=5_000,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
            group_instance_id=settings.group_instance_id("sink"),
        )
        self.consumer.subscribe([events_topic.get_topic_name()])
        await self.consumer.start()
        _running.append(self)

    async def on_stop(self) -> None:
        """Leave the group; whatever was polled but not committed is read again by the next owner."""
        if self in _running:
            _running.remove(self)
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _export_lag(self) -> None:
        await export_lag(settings, "sink", self._owned)

    def _owned(self) -> List[Tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in (self.consumer.assignment() if self.consumer else ())]

    @Service.task
    async def _drain(self) -> None:
        while not self.should_stop:
            if self.consumer is None:
                await self.sleep(0.1)
                continue
            try:
                await settle_once(self.consumer)
            except KafkaError as exc:
                log.warning("sink_kafka_error error=%r", exc)
                await self.sleep(1.0)


def sink_partitions() -> List[int]:
    """The events partitions this process's sink holds now; none before it has started or joined its group.

    Empty while its group rebalances: aiokafka revokes the assignment before the join.
    """
    return sorted({tp.partition for sink in _running if sink.consumer for tp in sink.consumer.assignment()})


def run_alone(loglevel: str) -> None:
    """The sink in a process of its own, without the Faust app, its tables or the gateway.

    Its metrics are served on ``UBS_WEB_HOST:UBS_WEB_PORT`` at /metrics by a
    server of its own (app.sink.alone), behind the gateway's API keys.
    """
    from app.sink.alone import AloneWorker, MetricsServer

    with access.refusing_to_start():
        exposure = access.start(settings.web_host)
        context = tls.server_context(settings)
    server = MetricsServer(settings.web_host, settings.web_port, context)
    AloneWorker(exposure, server, SettlementSink(), loglevel=loglevel).execute_from_commandline()


async def settle_once(consumer: EventConsumer) -> int:
    """Poll one batch, write it until the database takes it, then commit it. Returns events written."""
    batches: Dict[TopicPartition, List[Record]] = await consumer.getmany(
        timeout_ms=max(1, int(settings.sink_batch_within_s * 1000)), max_records=settings.sink_batch_size
    )
    if not batches:
        return 0
    events = decode_events(record.value for records in batches.values() for record in records)
    if events:
        await write_until_acknowledged(events)
        stamps = [record.timestamp / 1000.0 for records in batches.values() for record in records]
        metrics.observe_latencies(metrics.SINK_LATENCY, time.time(), stamps)
    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        # Partitions moved (or the broker is away): the next owner re-reads this batch and rewrites
        # the same rows, or a later commit of this sink covers it.
        metrics.SINK_COMMIT_FAILURES.inc()
        log.warning("sink_commit_failed events=%s error=%r", len(events), exc)
    return len(events)


def decode_events(values: Iterable[bytes]) -> List[Event]:
    """Events of a batch; anything else on the topic is logged and skipped, never a stall."""
    events: List[Event] = []
    for value in values:
        try:
            events.append(read_event(value))
        except InvalidOperation as error:
            metrics.SINK_SKIPPED.inc()
            log.error("sink_skip reason=%s field=%s value=%r", error.reason, error.field, bytes(value or b"")[:200])
    return events


async def write_until_acknowledged(events: Sequence[Event]) -> None:
    """Retry one batch until the database takes it; only then may its offsets be committed."""
    delays = backoff(0.1, settings.sink_retry_max_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            await store.write_events(events)
        except SettlementUnavailable as exc:
            metrics.SINK_FAILURES.inc()
            metrics.SINK_PAUSED.set(1)
            delay = next(delays)
            log.warning("sink_retry attempt=%s events=%s delay_s=%.1f error=%s", attempt, len(events), delay, exc)
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            log.info("sink_resumed attempts=%s events=%s", attempt, len(events))
        metrics.SINK_PAUSED.set(0)
        metrics.SINK_EVENTS.inc(len(events))
        metrics.SINK_BATCHES.inc()
        return
