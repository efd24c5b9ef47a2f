"""The draining producer buffer against Faust's own, with a slow broker."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, AsyncIterator, List

import pytest
from faust.transport.producer import ProducerBuffer

from app.frame.producer_buffer import DrainingProducerBuffer

SLOW_SEND_S = 0.3


class SlowChannel:
    """Stands in for a topic whose producer takes SLOW_SEND_S to accept each message."""

    def __init__(self) -> None:
        self.accepted: List[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(SLOW_SEND_S)
        self.accepted.append(fut)


def _future(channel: SlowChannel, n: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(channel=channel), n=n)


@asynccontextmanager
async def running(cls: type) -> AsyncIterator[ProducerBuffer]:
    """A started buffer of ``cls``, stopped on the way out."""
    buffer = cls()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        yield buffer
    finally:
        await buffer.stop()


@pytest.mark.asyncio
async def test_flush_returns_only_when_every_message_is_with_the_producer() -> None:
    channel = SlowChannel()
    async with running(DrainingProducerBuffer) as buffer:
        for n in range(3):
            buffer.put(_future(channel, n))
        await buffer.flush()
        assert [fut.n for fut in channel.accepted] == [0, 1, 2]
        assert buffer.outstanding == 0


@pytest.mark.asyncio
async def test_faust_flush_gives_up_with_messages_still_buffered() -> None:
    """Why the draining buffer exists; if Faust fixes its flush, this fails and the workaround can go."""
    channel = SlowChannel()
    async with running(ProducerBuffer) as buffer:
        for n in range(3):
            buffer.put(_future(channel, n))
        await buffer.flush()
        assert len(channel.accepted) < 3
        await asyncio.sleep(4 * SLOW_SEND_S)  # let its task drain before stopping (stop flushes too)
        assert len(channel.accepted) == 3


@pytest.mark.asyncio
async def test_flush_of_an_empty_buffer_returns_at_once() -> None:
    async with running(DrainingProducerBuffer) as buffer:
        await asyncio.wait_for(buffer.flush(), timeout=0.05)


@pytest.mark.asyncio
async def test_messages_put_during_a_flush_do_not_hold_it_up() -> None:
    channel = SlowChannel()
    async with running(DrainingProducerBuffer) as buffer:
        buffer.put(_future(channel, 0))
        flushing = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0)
        for n in range(1, 4):
            buffer.put(_future(channel, n))
        await flushing
        assert [fut.n for fut in channel.accepted][:1] == [0]
        assert len(channel.accepted) < 4
        await buffer.flush()
        assert [fut.n for fut in channel.accepted] == [0, 1, 2, 3]
