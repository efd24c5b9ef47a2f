"""The consumer hands over inline what cannot block, and races the rest as Faust does (app.frame.consume_loop)."""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

import faust
import pytest
from faust.types import TP
from faust.types.tuples import Message

from app.frame.consume_loop import UBSCoreConsumer

TOPIC = TP("loop.topic", 0)
# ruff: noqa: SLF001 - the test registers a channel the way the conductor does


def message(offset: int) -> Message:
    return Message(TOPIC.topic, TOPIC.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=TOPIC)


@pytest.fixture()
async def consumer_and_log() -> Tuple[faust.App, UBSCoreConsumer, List[Any]]:
    """A consumer whose callback records each delivery; its partition has one subscribed channel."""
    app = faust.App("loop", broker="kafka://localhost:1", store="memory://")
    delivered: List[Any] = []
    block = asyncio.Event()

    async def deliver(record: Message) -> None:
        if record.offset < 0:
            await block.wait()  # a delivery that waits (a full queue, suspended flow control)
        delivered.append(record.offset)

    consumer = UBSCoreConsumer(
        app.transport,
        callback=deliver,
        on_partitions_revoked=lambda revoked: None,
        on_partitions_assigned=lambda assigned: None,
        beacon=app.beacon,
        loop=None,
    )
    app.topics._tp_index[TOPIC] = {app.topic(TOPIC.topic).clone(is_iterator=True)}
    return app, consumer, delivered


async def test_a_delivery_that_cannot_wait_runs_inline_without_yielding_to_the_loop(
    consumer_and_log: Tuple[faust.App, UBSCoreConsumer, List[Any]],
) -> None:
    app, consumer, delivered = consumer_and_log
    app.flow_control.resume()
    others: List[str] = []
    asyncio.get_running_loop().call_soon(others.append, "ran")
    await consumer.wait_first(consumer.callback(message(7)), consumer.suspend_flow.wait())
    assert delivered == [7]
    assert others == []  # no other callback got a turn: the hand-over did not suspend


async def test_while_flow_control_is_suspended_the_delivery_takes_faust_race(
    consumer_and_log: Tuple[faust.App, UBSCoreConsumer, List[Any]],
) -> None:
    app, consumer, delivered = consumer_and_log
    others: List[str] = []
    asyncio.get_running_loop().call_soon(others.append, "ran")
    await consumer.wait_first(consumer.callback(message(7)), consumer.suspend_flow.wait())
    assert delivered == [7]
    assert others == ["ran"]  # the race ran the delivery as a task


async def test_a_waiting_delivery_is_given_up_when_the_flow_is_suspended(
    consumer_and_log: Tuple[faust.App, UBSCoreConsumer, List[Any]],
) -> None:
    app, consumer, delivered = consumer_and_log
    app.flow_control.resume()
    consumer.suspend_flow.set()  # a rebalance began: nothing is delivered inline
    await asyncio.wait_for(consumer.wait_first(consumer.callback(message(-1)), consumer.suspend_flow.wait()), 5)
    assert delivered == []
