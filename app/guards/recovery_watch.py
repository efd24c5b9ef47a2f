"""Progress watch of table recovery: changelog partitions the recovery waits for and never receives.

A worker given new partitions rebuilds their tables from the changelogs before
it takes input, and Faust's recovery can wait for a changelog partition whose
records never reach it, for ever, with nothing but a warning in its log
(docs/fault-injection.md, finding 15). The worker is then never ready, its input
waits, and no input watch can see it: the input is legitimately held back
during recovery.

So every few seconds the worker compares, for each active changelog partition
of the recovery under way, the offset the recovery has applied with the
highwater it waits for. Records pending there and no progress for
``UBS_STALL_S`` seconds, in the same recovery generation, is a stall, and the
worker takes the input watch's two steps (app.guards.resume): lift and seek the
partition to the record after the one applied, and if it is still stuck one
period later while no partition of the recovery moved, exit 70 for the
supervisor. The decision is app.guards.stalls, the same as the input's.

Faust starts its own timers only after the first recovery, so this one is a
startup task (app.faust_app.UBSCoreApp.startup_task) and watches that one too.
It holds still while a bulk load (app.frame.bulk_recovery) reads the changelogs:
a resume then would start a second reader of the same partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from faust.types import TP

from app.faust_app import app
from app.frame import bulk_recovery, failpoints
from app.frame.faust_internals import recovery_progress
from app.guards.resume import exit_for_restart, resume_partition
from app.guards.stalls import RecoveryWatch, Stall, StallAction
from app.observability import metrics
from app.settings import settings
from app.tables import cursors

log = logging.getLogger(__name__)


def report(stall: Stall) -> None:
    """One log line and one counter per stall."""
    metrics.RECOVERY_STALLS.labels(action=stall.action).inc()
    log.error(
        "recovery_stalled topic=%s partition=%s offset=%s highwater=%s idle_s=%.1f action=%s",
        stall.tp.topic,
        stall.tp.partition,
        stall.position.cursor,
        stall.position.end - 1,
        stall.idle_s,
        stall.action,
    )


async def resume(stall: Stall) -> None:
    """Step 1 for a changelog partition: lift it and re-read from the record after the one applied."""
    found = await resume_partition(stall.tp, stall.position.next_offset)
    log.warning(
        "recovery_resumed topic=%s partition=%s offset=%s seek=%s held=%s fetcher=%s",
        stall.tp.topic,
        stall.tp.partition,
        stall.position.next_offset,
        found.seek,
        found.held,
        found.fetcher,
    )


watch = RecoveryWatch(settings.stall_s)


async def check_recovery() -> None:
    """Look for stalled changelog partitions of the recovery under way and act on them."""
    generation, progress = recovery_progress(app.tables.recovery)  # type: ignore[attr-defined]  # TableManagerT omits it
    metrics.RECOVERY_REMAINING.set(sum(max(0, highwater - offset) for offset, highwater in progress.values()))
    if bulk_recovery.loading:
        progress = {}  # one reader per partition: a resume now would start Faust's beside the bulk load
    stalls = watch.observe(time.monotonic(), generation, progress)
    for stall in stalls:
        report(stall)
    if any(stall.action == StallAction.EXIT for stall in stalls):
        exit_for_restart()
    for stall in stalls:
        await resume(stall)


@app.startup_task
async def watch_recovery() -> None:
    """Check every few seconds for as long as the worker runs (see the module docstring)."""
    point = failpoints.armed_point()
    if point in ("stall_recovery", "stall_recovery_hard"):
        hold_back_changelog(point, failpoints.armed_pass())
    while True:
        await asyncio.sleep(settings.stall_check_s)
        try:
            await check_recovery()
        except Exception as exc:  # noqa: BLE001 - a watch that stops would leave the next stall unseen
            log.warning("recovery_watch_failed error=%r", exc)


def hold_back_changelog(point: str, nth: int) -> None:
    """Fault injection (``stall_recovery*:N``): Faust's Nth resume of the ``cursors`` changelog is swallowed.

    With ``stall_recovery`` only the Nth (that recovery then never receives the
    partitions' records); with ``stall_recovery_hard`` the Nth and every one
    after, the watch's own resume included, so only the exit gets the worker going.
    """
    hard = point == "stall_recovery_hard"
    consumer = app.consumer
    resume_partitions = consumer.resume_partitions
    held_topic = cursors.changelog_topic.get_topic_name()
    calls = 0

    def resume_but_the_changelog(tps: Iterable[TP]) -> None:
        nonlocal calls
        wanted = set(tps)
        held = {tp for tp in wanted if tp.topic == held_topic}
        if held:
            calls += 1
            if calls == nth or (hard and calls > nth):
                partitions = ",".join(str(tp.partition) for tp in sorted(held))
                log.warning("failpoint name=%s pass=%s held=%s", point, calls, partitions)
                wanted -= held
        resume_partitions(wanted)

    setattr(consumer, "resume_partitions", resume_but_the_changelog)  # noqa: B010 - replacing a method on purpose
