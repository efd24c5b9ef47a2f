"""Ownership has a deadline: a worker vouches for its partitions only while the group coordinator answers it.

A worker cut off from Kafka while clients still reach it over HTTP would
otherwise go on answering reads from its tables after the group moved its
partitions to another worker and that worker applied new operations: stale
balances, with ``/health`` saying "ok" (issue 31).

The rule. The coordinator moves a member's partitions only after a full
session timeout (``UBS_SESSION_TIMEOUT_S``) without receiving a heartbeat from
it. A heartbeat answered successfully was received by the broker no earlier
than it was sent, so the partitions cannot move before its sending time plus
the session timeout. This worker records that sending time for every heartbeat
answered without error (a REBALANCE_IN_PROGRESS answer counts too: it is the
coordinator speaking, and the member stays in the group through the rebalance)
and for every completed join (a new assignment, counted when it arrives), and
serves its partitions' reads only while the last such time is at most
``UBS_OWNERSHIP_BOUND_S`` old (``confirmed``). The bound is below the session
timeout (half of it by default, refused at or above it): the margin covers a
read checked just before the bound and answered just after, clocks running at
slightly different rates, and the join's own round trip.

Past the bound the reads answer 503 ``not_owner_confirmed`` (app.web.at_owner),
``/health`` says ``partitioned``, and one ``ownership_unconfirmed`` line is
logged; when the coordinator answers again, one ``ownership_confirmed`` line,
and the reads are served again (or, if the group moved the partitions, the
rebalance hands them over as usual). Before its first assignment a worker has
vouched for nothing, and its statuses (``starting``, ``recovering``) are as
they were. The sink alone (``UBS_ROLE=sink``) serves no reads and no
``/health``: it has nothing to vouch for, and is left out.

Where the times come from: aiokafka's group coordinator heartbeats in Faust's
consumer thread and keeps its last success in a local variable, so its
``_do_heartbeat`` is wrapped on the instance (app.frame.faust_internals,
``on_heartbeat``) whenever an assignment arrives, which every coordinator's
first heartbeat follows. The time is one float, written in the consumer
thread and read in the main one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Optional

from faust.transport.drivers.aiokafka import ConsumerRebalanceListener

from app.frame.faust_internals import listener_coordinator, on_heartbeat
from app.observability import metrics
from app.settings import settings

log = logging.getLogger(__name__)

#: How often the watch looks, so the unconfirmed line comes within a second of the bound even with no request.
WATCH_S = 1.0


def confirmed(last_heard: Optional[float], now: float, bound_s: float) -> bool:
    """Whether a worker last heard from its coordinator at ``last_heard`` still owns its partitions at ``now``.

    Never heard (None): nothing to vouch for.
    """
    return last_heard is not None and now - last_heard <= bound_s


class Ownership:
    """When this worker last heard from its group's coordinator, and whether that still vouches for its partitions."""

    def __init__(self, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound_s = bound_s
        self.clock = clock
        self.last_heard: Optional[float] = None
        self.started = clock()
        self._vouching: Optional[bool] = None

    def heard(self, at: Optional[float] = None) -> None:
        """The coordinator answered a request sent at ``at`` (now when not given); any thread may call it."""
        self.last_heard = self.clock() if at is None else at

    def silence_s(self) -> Optional[float]:
        """Seconds since the last word from the coordinator; None before the first."""
        heard = self.last_heard
        return None if heard is None else max(0.0, self.clock() - heard)

    def vouches(self) -> bool:
        """Whether the partitions' reads may be served now; logs the change when it is one."""
        heard = self.last_heard
        now = self.clock()
        vouching = confirmed(heard, now, self.bound_s)
        if heard is not None and vouching != self._vouching:
            before, self._vouching = self._vouching, vouching
            if vouching and before is False:
                log.warning("ownership_confirmed silence_s=%.1f bound_s=%.1f", now - heard, self.bound_s)
            elif not vouching:
                log.error(
                    "ownership_unconfirmed silence_s=%.1f bound_s=%.1f action=refuse_reads", now - heard, self.bound_s
                )
        return vouching

    def partitioned(self) -> bool:
        """Whether this worker had an assignment and can no longer vouch for it (``/health``: ``partitioned``)."""
        return self.last_heard is not None and not self.vouches()

    def vouched_for_s(self) -> float:
        """How much longer the last word vouches, at most; 0 when it no longer does."""
        heard = self.last_heard
        return 0.0 if heard is None else max(0.0, heard + self.bound_s - self.clock())

    def gauge(self) -> float:
        """``ubscore_coordinator_silence_seconds``: since the last word, or since the start before the first."""
        heard = self.last_heard
        return max(0.0, self.clock() - (self.started if heard is None else heard))


tracker = Ownership(settings.ownership_bound_s)
metrics.COORDINATOR_SILENCE.set_function(lambda: tracker.gauge())


def recording(heartbeat: Callable[[], Any], into: Optional[Ownership] = None) -> Callable[[], Any]:
    """``heartbeat`` (a coordinator's ``_do_heartbeat``), recording in ``tracker`` each one answered without error.

    aiokafka's returns True for an answer that keeps the member in the group,
    False for a failed request or an error answer, and raises for the rest.
    The time recorded is the sending time (see the module docstring).
    """

    async def heartbeat_recorded() -> Any:
        target = tracker if into is None else into
        sent = target.clock()
        success = await heartbeat()
        if success is True:
            target.heard(sent)
        return success

    return heartbeat_recorded


class OwnershipListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is untyped
    """Faust's rebalance listener, which also counts an assignment as word from the coordinator.

    Each new coordinator object joins before it heartbeats, so its heartbeat is
    wrapped here too (once per object).
    """

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        coordinator = listener_coordinator(self)
        if coordinator is not None:
            on_heartbeat(coordinator, recording)
        tracker.heard()
        await super().on_partitions_assigned(assigned)


async def watch() -> None:
    """Look every second, so the change is logged when it happens, not at the next read (ledger roles only)."""
    while True:
        await asyncio.sleep(WATCH_S)
        tracker.vouches()
