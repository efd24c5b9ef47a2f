"""The settlement sink: balance.events -> the CQL database, nothing lost, nothing rolled back.

Events are taken in batches; a batch is written with ``CqlStore.write_events``
and only then does the loop move on, which is when Faust acks the batch's
messages and may commit their offsets. While the database is down the sink keeps
retrying the same batch with capped exponential backoff, so the partitions wait
(consumer lag grows, ``ubscore_sink_paused`` is 1) and resume where they stopped.
Writes are idempotent, so a batch replayed after a crash rewrites the same rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import List, Sequence

from faust.types import StreamT

from app import metrics
from app.app import app
from app.cql import CqlStore
from app.errors import SettlementUnavailable
from app.models import Event
from app.settings import settings
from app.topics import events_topic

log = logging.getLogger(__name__)

store = CqlStore(settings)


@app.agent(events_topic, name="settlement")
async def settle(stream: StreamT[bytes]) -> None:
    """Write every event of this worker's partitions to the database, in batches."""
    async for batch in stream.take(settings.sink_batch_size, within=settings.sink_batch_within_s):
        events = decode_events(batch)
        if events:
            await write_until_acknowledged(events)


def decode_events(values: Sequence[bytes]) -> List[Event]:
    """Events of a batch; anything else on the topic is logged and skipped, never a stall."""
    events: List[Event] = []
    for value in values:
        try:
            body = json.loads(value)
            event = Event.from_json(body)
            if not isinstance(event.user_id, int) or not isinstance(event.seq, int) or not event.op_id:
                raise ValueError("user_id, seq and op_id are required")
        except (ValueError, TypeError, AttributeError) as exc:
            metrics.inc("ubscore_sink_skipped_total")
            log.error("sink_skip reason=%s value=%r", exc, bytes(value)[:200])
            continue
        events.append(event)
    return events


async def write_until_acknowledged(events: Sequence[Event]) -> None:
    """Retry one batch until the database takes it; only then may its offsets be committed."""
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            await store.write_events(events)
        except SettlementUnavailable as exc:
            metrics.inc("ubscore_sink_failures_total")
            metrics.set_gauge("ubscore_sink_paused", 1)
            log.warning("sink_retry attempt=%s events=%s delay_s=%.1f error=%s", attempt, len(events), delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.sink_retry_max_s)
            continue
        if attempt > 1:
            log.info("sink_resumed attempts=%s events=%s", attempt, len(events))
        metrics.set_gauge("ubscore_sink_paused", 0)
        metrics.inc("ubscore_sink_events_total", len(events))
        metrics.inc("ubscore_sink_batches_total")
        return
