"""Faust's consumer, handing a fetched record to the agent without a trip through the event loop when nothing can block.

Faust's fetcher delivers every record by racing the delivery against the
consumer's "suspend flow" event (set while a rebalance stops the flow), so
that a delivery stuck behind a full queue or suspended flow control is given
up when a rebalance begins. The race costs four tasks and one suspension per
record, and the suspension hands the agent its input one record at a time: a
checkpoint then holds only the few records that arrived during the previous
one, and its fixed cost is shared by few.

The rule here: a delivery that nothing can make wait has nothing to race, and
runs inline, to the same effect. It cannot wait when the flow is not being
suspended, flow control is active, the subscription index is not being
rebuilt, the producer buffer is within its limit, and every queue the record
goes to has room. Any other delivery takes Faust's race, unchanged. Faust's
fetcher still yields to the loop every hundred records and between fetches,
so the agent and the checkpoint get their turns.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from faust.transport.drivers.aiokafka import Consumer
from faust.types.tuples import Message
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

from app.frame.faust_internals import delivery_can_wait
from app.frame.ownership import OwnershipListener


class Delivery:
    """One record on its way to the channels that subscribe to its partition; awaiting it delivers it."""

    __slots__ = ("message", "_deliver")

    def __init__(self, deliver: Any, message: Message) -> None:
        self._deliver = deliver
        self.message = message

    def __await__(self) -> Generator[Any, None, Any]:
        return self._deliver(self.message).__await__()


class UBSCoreConsumer(Consumer):
    """The aiokafka consumer of Faust, delivering inline what cannot block, recording word from its coordinator."""

    #: Faust's rebalance listener, which also keeps the ownership deadline (app.frame.ownership).
    RebalanceListener = OwnershipListener

    def __init__(self, *args: Any, callback: Any, **kwargs: Any) -> None:
        super().__init__(*args, callback=lambda message: Delivery(callback, message), **kwargs)

    async def wait_first(self, *coros: WaitArgT, timeout: Optional[Seconds] = None) -> WaitResults:  # noqa: ASYNC109 - mode's signature
        """Faust's race, except for a delivery that cannot wait, which is simply awaited."""
        first = coros[0] if coros else None
        if isinstance(first, Delivery) and not delivery_can_wait(self.app, self, first.message.tp):
            for other in coros[1:]:
                close = getattr(other, "close", None)
                if close is not None:
                    close()  # the suspend-flow wait, never started: nothing to race
            result = await first
            return WaitResults([first], [result], False)
        return await super().wait_first(*coros, timeout=timeout)  # type: ignore[arg-type]  # mode: None allowed
