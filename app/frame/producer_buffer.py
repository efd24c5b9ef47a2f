"""A producer buffer whose flush returns only when every buffered message is with aiokafka.

Table changelogs and the ledger's outputs (``send_soon``) wait in Faust's
ProducerBuffer until a background task hands them to aiokafka one by one.
Before it commits input offsets Faust flushes that buffer, then aiokafka. Faust's
``ProducerBuffer.flush`` (faust-streaming 0.15.x) gives up as soon as 0.1 s pass
without a message leaving the buffer, and it counts a message as gone once the
task took it, before aiokafka accepted it. When the broker is slow or away
(metadata refresh, a full accumulator) the commit then goes ahead with outputs
still in the buffer, and a worker killed at that moment loses them while their
inputs count as done: an operation without its result.

This buffer numbers the messages put into it and the messages aiokafka has
accepted (the queue is FIFO), and its flush waits until every message put before
the flush began was accepted, however long that takes. A commit then covers only
outputs aiokafka holds, and aiokafka's own flush delivers them. Messages the
agent puts meanwhile do not hold the flush up. A broker that stays away blocks
the commit, which is what at-least-once needs; a warning is logged every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faust.transport.producer import ProducerBuffer
from faust.types import ProducerT
from faust.types.tuples import FutureMessage

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0


class DrainingProducerBuffer(ProducerBuffer):
    """Faust's ProducerBuffer with a flush that drains everything put before it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.put_count = 0
        self.accepted_count = 0

    def put(self, fut: FutureMessage) -> None:
        """Queue a message, numbered in order."""
        self.put_count += 1
        super().put(fut)

    async def _send_pending(self, fut: FutureMessage) -> None:
        await super()._send_pending(fut)
        self.accepted_count += 1

    @property
    def outstanding(self) -> int:
        """Messages not yet accepted by aiokafka: queued, or taken and being handed over."""
        return self.put_count - self.accepted_count

    async def flush(self) -> None:
        """Return once every message put before this call has been accepted by aiokafka."""
        target = self.put_count
        started = time.monotonic()
        warned_at = started
        while self.accepted_count < target:
            if self.state == "crashed" or (self.state != "running" and self.size):
                # The sending task is gone: nothing will drain the queue (Faust raises here too).
                raise RuntimeError(f"Cannot flush: producer buffer {self.state}, {self.size} messages queued")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                now = time.monotonic()
                if now - warned_at >= WARN_EVERY_S:
                    warned_at = now
                    log.warning(
                        "producer_flush_waiting behind=%s waited_s=%.0f", target - self.accepted_count, now - started
                    )


def install(producer: ProducerT) -> ProducerT:
    """Give a Faust producer (not yet started) a draining buffer in place of its own."""
    buffer = DrainingProducerBuffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = producer.app  # type: ignore[attr-defined]  # ProducerT omits the app it belongs to
    producer.buffer = buffer  # type: ignore[attr-defined]
    return producer
