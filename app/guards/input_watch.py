"""Progress watch of the ledger's input: records that wait in Kafka while the agent waits for them.

A worker can own a partition, report ready, and receive none of the records
waiting there, with nothing in Faust's log (docs/fault-injection.md, finding 11).
The hole filler (app.guards.input_gaps) cannot see that: no later record arrives
to reveal the hole. Only the offsets can.

So every few seconds the worker compares, for each input partition it owns,
the end offset in Kafka with the highest offset the agent applied there (the
``cursors`` table). A partition is stalled when records are pending and its
cursor has not moved for ``UBS_STALL_S`` seconds, while nothing legitimate holds
the whole input back: no rebalance, no table recovery, no message in the agent's
hands for longer than a moment (a hole being filled, a send waiting for the
broker), and the broker answered. Then the worker acts, one step at a time:

1. ``resume``: lift any pause Faust holds on the partition (paused or inactive
   partition, stopped flow) and seek it to the record after its cursor.
   Re-reading from there is safe: a record applied already is deduplicated.
2. ``exit``: if the same partition is still stalled one period later and no
   owned partition moved for a whole period, the worker exits with status 70
   (EX_SOFTWARE) so its supervisor starts a fresh process, which rejoins the
   group and rebuilds like any restarted worker. A partition starving while
   others flow is resumed again instead (app.guards.stalls says why).

The decision (app.guards.stalls) is plain code without I/O; the timer ``watch_input``
below gathers the facts and carries the decision out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Dict, List, Optional, Set

from faust.sensors import Sensor
from faust.types import TP, EventT, StreamT

from app.faust_app import app
from app.frame import failpoints
from app.guards.input_gaps import cursor_key
from app.guards.resume import exit_for_restart, resume_partition
from app.guards.stalls import Position, ProgressWatch, Stall, StallAction
from app.observability import metrics
from app.settings import settings
from app.tables import cursors, read
from app.topics import CREDITS, OPERATIONS

log = logging.getLogger(__name__)

INPUT_TOPICS = {OPERATIONS, CREDITS}

#: A message in the agent's hands longer than this holds all input back legitimately.
BUSY_S = 1.0

#: Longest wait for the broker's offsets; past it the watch gives no verdict this time.
QUERY_TIMEOUT_S = 5.0


class AgentActivity(Sensor):
    """Faust sensor: when the ledger agent took the message it is still handling, if any."""

    def __init__(self, topics: Set[str]) -> None:
        super().__init__()
        self.topics = topics
        self.busy_since: Optional[float] = None

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT, event: EventT) -> Optional[Dict]:
        """A message reached the agent."""
        if tp.topic in self.topics:
            self.busy_since = time.monotonic()
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: Optional[Dict] = None
    ) -> None:
        """The agent is done with it."""
        if tp.topic in self.topics:
            self.busy_since = None

    def busy_for(self, now: float) -> float:
        """Seconds the current message has been in the agent's hands (0 when idle)."""
        return 0.0 if self.busy_since is None else now - self.busy_since


def owned_inputs() -> List[TP]:
    """The ledger's input partitions assigned to this worker, in order."""
    return sorted(tp for tp in app.consumer.assignment() if tp.topic in INPUT_TOPICS)


async def observe_positions() -> Dict[TP, Position]:
    """Cursor and Kafka offsets of every input partition this worker owns."""
    owned = owned_inputs()
    if not owned:
        return {}
    ends = await asyncio.wait_for(app.consumer.highwaters(*owned), QUERY_TIMEOUT_S)
    firsts = await asyncio.wait_for(app.consumer.earliest_offsets(*owned), QUERY_TIMEOUT_S)
    positions: Dict[TP, Position] = {}
    for tp in owned:
        cursor = read(cursors, tp.partition, cursor_key(tp.topic, tp.partition))
        positions[tp] = Position(cursor=cursor, first=int(firsts[tp]), end=int(ends[tp]))
    return positions


async def resume(stall: Stall) -> None:
    """Step 1 for an input partition: lift it and re-read from the record after its cursor."""
    found = await resume_partition(stall.tp, stall.position.next_offset)
    log.warning(
        "input_resumed topic=%s partition=%s offset=%s seek=%s held=%s fetcher=%s",
        stall.tp.topic,
        stall.tp.partition,
        stall.position.next_offset,
        found.seek,
        found.held,
        found.fetcher,
    )


def pause_input() -> None:
    """Fault injection (failpoint ``stall_input``): pause every input partition inside Faust."""
    app.consumer.pause_partitions(set(owned_inputs()))


def pause_input_for_good() -> None:
    """Fault injection (failpoint ``stall_input_hard``): pause the input and make Faust's resume a no-op."""
    pause_input()
    setattr(app.consumer, "resume_partitions", lambda tps: None)  # noqa: B010 - replacing a method on purpose


class StallFailpoint(Sensor):
    """Fault injection: passes the armed ``stall_input*`` point after each message of the agent.

    Added only when such a point is armed, like app.frame.failpoints.CommitFailpoint,
    so the agent's per-message path carries nothing for it in production.
    """

    def __init__(self, point: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.point = point
        self.action = action

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: Optional[Dict] = None
    ) -> None:
        """The agent is done with a message."""
        if tp.topic in INPUT_TOPICS:
            failpoints.hit(self.point, self.action)


def report(stall: Stall) -> None:
    """One log line and one counter per stall."""
    metrics.INPUT_STALLS.labels(action=stall.action).inc()
    log.error(
        "input_stalled topic=%s partition=%s cursor=%s end=%s idle_s=%.1f action=%s",
        stall.tp.topic,
        stall.tp.partition,
        stall.position.cursor,
        stall.position.end,
        stall.idle_s,
        stall.action,
    )


watch = ProgressWatch(settings.stall_s)
activity = AgentActivity(INPUT_TOPICS)
app.sensors.add(activity)

INJECTED_STALLS: Dict[str, Callable[[], None]] = {
    "stall_input": pause_input,
    "stall_input_hard": pause_input_for_good,
}
_stall_point = failpoints.armed_point()
if _stall_point in INJECTED_STALLS:
    app.sensors.add(StallFailpoint(_stall_point, INJECTED_STALLS[_stall_point]))


@app.timer(interval=settings.stall_check_s)
async def watch_input() -> None:
    """Look for stalled input partitions and act on them (see the module docstring)."""
    now = time.monotonic()
    recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]  # TableManagerT omits it
    quiet = not app.rebalancing and recovered and activity.busy_for(now) < BUSY_S
    try:
        positions = await observe_positions()
    except Exception as exc:  # noqa: BLE001 - broker away or partitions moving: no verdict this time
        log.debug("input_watch_skipped error=%r", exc)
        positions, quiet = {}, False
    stalls = watch.observe(time.monotonic(), positions, quiet)
    for stall in stalls:
        report(stall)
    if any(stall.action == StallAction.EXIT for stall in stalls):
        exit_for_restart()
    for stall in stalls:
        await resume(stall)
