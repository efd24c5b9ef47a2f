"""Group watch: a consumer-group error nobody collects must not keep the worker out of its group.

aiokafka's group coordination hands some errors to the application instead of
retrying on its own (a JoinGroup answered REBALANCE_IN_PROGRESS is one): it
parks the error, waits until the next poll of the consumer raises it, and only
then joins again. Faust polls only the partitions it holds, and a worker whose
join failed holds none, so the error was never collected: the worker stayed out
of its group for good, answering HTTP and applying nothing, while its
operations waited for a member that never came (docs/fault-injection.md,
finding 17).

The rule: an error found parked at two looks in a row, one period apart, has had
a period for Faust's own poll to collect it, and is collected here, in the
consumer's thread, as a poll would. It is logged (``group_error_collected``)
and counted, and the coordination task joins again.

Faust starts its own timers only after the first recovery, and a worker that
never joined never finishes one, so this is a startup task like the recovery
watch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from faust.exceptions import ConsumerNotStarted

from app.faust_app import app
from app.frame.faust_internals import aiokafka_consumer, collect_group_error, in_consumer_thread, parked_group_error
from app.observability import metrics
from app.settings import settings

log = logging.getLogger(__name__)


async def check_group(seen: Optional[BaseException]) -> Optional[BaseException]:
    """Collect the parked error if it is ``seen``, the one parked at the last look; what is parked now."""
    try:
        kafka = aiokafka_consumer(app.consumer)
    except ConsumerNotStarted:
        return None
    parked = parked_group_error(kafka)
    if parked is None or parked is not seen:
        return parked
    collected = await in_consumer_thread(app.consumer, collect_group_error, kafka)
    metrics.GROUP_ERRORS_COLLECTED.inc()
    log.error("group_error_collected error=%r action=rejoin", collected)
    return None


@app.startup_task
async def watch_group() -> None:
    """Look every few seconds for as long as the worker runs (see the module docstring)."""
    seen: Optional[BaseException] = None
    while True:
        await asyncio.sleep(settings.stall_check_s)
        try:
            seen = await check_group(seen)
        except Exception as exc:  # noqa: BLE001 - a watch that stops would leave the next parked error
            log.warning("group_watch_failed error=%r", exc)
