"""The two steps the progress watches take on a stuck partition: lift and re-seek it, or exit for a restart.

Both watches (app.guards.input_watch for the ledger's input, app.guards.recovery_watch
for the tables' changelogs) find a partition Faust owns and reads nothing from,
and neither knows which of Faust's or aiokafka's states holds it. So the first
step lifts every hold Faust can have on it and points the fetcher at the next
record wanted; reading a record twice is harmless on both paths (the ledger
deduplicates, the recovery skips offsets it has). The state found is returned for
the watch's log line, so a stall seen in the wild says what held it. The second step is a crash-like
exit with status 70 for the supervisor: a fresh process rejoins the group and
reopens its tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict

from faust.types import TP

from app.exit_codes import ExitCode
from app.faust_app import app
from app.frame.faust_internals import aiokafka_partition_state, faust_offsets, held_by_faust

log = logging.getLogger(__name__)

#: Longest wait for a seek; past it the next step (the exit) is left to act.
SEEK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resumed:
    """What a resume found and did, for the watch's log line: the seek's outcome, the holds, the fetcher before."""

    seek: str
    held: str
    fetcher: str


async def resume_partition(tp: TP, offset: int) -> Resumed:
    """Lift whatever Faust holds on ``tp``, then seek its fetcher to ``offset``; say what was found.

    Only what is actually held is lifted: resuming Faust's flow control also
    empties the stream buffers, so it is called only when the flow is stopped.
    The seek goes through the consumer's own thread (``seek_wait``), which also
    resets the offset below which Faust drops fetched records.
    """
    consumer = app.consumer
    held = {
        **held_by_faust(consumer, tp),
        "flow_stopped": not consumer.flow_active,  # type: ignore[attr-defined]  # ConsumerT omits it
        "flow_control_off": not app.flow_control.is_active(),
    }
    before = fetcher_state(tp)  # read before anything is lifted or sought
    if held["paused"] or held["inactive"]:
        consumer.resume_partitions({tp})
    if held["flow_stopped"]:
        consumer.resume_flow()
    if held["flow_control_off"]:
        app.flow_control.resume()
    try:
        await asyncio.wait_for(consumer.seek_wait({tp: offset}), SEEK_TIMEOUT_S)
        sought = "ok"
    except Exception as exc:  # noqa: BLE001 - a fetcher that cannot seek is left to the next step, the exit
        sought = type(exc).__name__
    return Resumed(sought, ",".join(f"{name}={str(value).lower()}" for name, value in held.items()), before)


def fetcher_state(tp: TP) -> str:
    """What Faust and aiokafka believe about the partition, read-only, for the log line of a stall.

    These are private attributes of both libraries, read best-effort: the line
    is for finding the cause of a stall, not for control.
    """
    facts: Dict[str, Any] = faust_offsets(app.consumer, tp)
    try:
        facts.update(aiokafka_partition_state(app.consumer, tp))
    except Exception as exc:  # noqa: BLE001 - best-effort diagnostics only
        facts["kafka_state"] = type(exc).__name__
    return ",".join(f"{name}={value}" for name, value in facts.items())


def exit_for_restart() -> None:
    """Leave without cleanup, like a crash: the restarted worker reopens its tables and reads the changelog tail."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(ExitCode.STALLED)
