"""The progress watch's decisions (app.guards.stalls): when a partition counts as stalled, and which step follows."""

from __future__ import annotations

from typing import Dict, List, Optional

from faust.types import TP

from app.guards.stalls import Position, ProgressWatch, RecoveryWatch, Stall, StallAction, recovery_positions

A = TP("balance.operations", 0)
B = TP("balance.credits", 0)
LIMIT = 20.0


def at(cursor: Optional[int], end: int, first: int = 0) -> Position:
    return Position(cursor=cursor, first=first, end=end)


def actions(stalls: List[Stall]) -> Dict[TP, str]:
    return {stall.tp: stall.action for stall in stalls}


def test_pending_means_records_beyond_the_cursor() -> None:
    assert at(9, 11).pending
    assert not at(9, 10).pending  # offset 9 is the last record: all applied
    assert at(None, 1).pending  # never applied anything, one record waiting
    assert not at(None, 5, first=5).pending  # every record there was deleted by retention
    assert at(None, 6, first=5).pending


def test_a_partition_whose_cursor_does_not_move_is_resumed_then_the_worker_exits() -> None:
    watch = ProgressWatch(LIMIT)
    assert watch.observe(0.0, {A: at(5, 50)}, quiet=True) == []
    assert watch.observe(LIMIT - 1, {A: at(5, 50)}, quiet=True) == []
    first = watch.observe(LIMIT, {A: at(5, 50)}, quiet=True)
    assert actions(first) == {A: StallAction.RESUME}
    assert first[0].idle_s == LIMIT and first[0].position == at(5, 50)
    # The resume gets a full period before the next step.
    assert watch.observe(2 * LIMIT - 1, {A: at(5, 50)}, quiet=True) == []
    assert actions(watch.observe(2 * LIMIT, {A: at(5, 50)}, quiet=True)) == {A: StallAction.EXIT}


def test_a_partition_starved_while_others_flow_is_resumed_again_and_never_exits() -> None:
    watch = ProgressWatch(LIMIT)
    for step in range(6):
        now = step * LIMIT
        stalls = watch.observe(now, {A: at(5, 50), B: at(step * 10, step * 10 + 30)}, quiet=True)
        assert actions(stalls) == ({} if step == 0 else {A: StallAction.RESUME})


def test_the_exit_needs_a_whole_period_without_progress_anywhere() -> None:
    watch = ProgressWatch(LIMIT)
    watch.observe(0.0, {A: at(5, 50), B: at(0, 30)}, quiet=True)
    watch.observe(LIMIT / 2, {A: at(5, 50), B: at(10, 30)}, quiet=True)  # B moves, then stops for good
    assert actions(watch.observe(LIMIT, {A: at(5, 50), B: at(10, 30)}, quiet=True)) == {A: StallAction.RESUME}
    assert actions(watch.observe(1.5 * LIMIT, {A: at(5, 50), B: at(10, 30)}, quiet=True)) == {B: StallAction.RESUME}
    # One period after B's last move both are stuck, and A was resumed before: the worker leaves.
    assert actions(watch.observe(2 * LIMIT, {A: at(5, 50), B: at(10, 30)}, quiet=True)) == {A: StallAction.EXIT}


def test_progress_after_a_resume_forgets_it() -> None:
    watch = ProgressWatch(LIMIT)
    watch.observe(0.0, {A: at(5, 50)}, quiet=True)
    assert actions(watch.observe(LIMIT, {A: at(5, 50)}, quiet=True)) == {A: StallAction.RESUME}
    assert watch.observe(LIMIT + 5, {A: at(30, 60)}, quiet=True) == []  # it moved
    # Stuck again later: the first step again, not the exit.
    assert actions(watch.observe(2 * LIMIT + 5, {A: at(30, 60)}, quiet=True)) == {A: StallAction.RESUME}


def test_a_moving_cursor_or_nothing_pending_is_never_a_stall() -> None:
    watch = ProgressWatch(LIMIT)
    for step in range(10):
        assert watch.observe(step * LIMIT, {A: at(step * 10, step * 10 + 50)}, quiet=True) == []
    idle = ProgressWatch(LIMIT)
    for step in range(10):
        assert idle.observe(step * LIMIT, {A: at(49, 50)}, quiet=True) == []


def test_nothing_counts_while_the_input_is_held_back() -> None:
    watch = ProgressWatch(LIMIT)
    watch.observe(0.0, {A: at(5, 50)}, quiet=True)
    assert watch.observe(LIMIT + 1, {A: at(5, 50)}, quiet=False) == []  # a rebalance, a busy agent...
    assert watch.observe(2 * LIMIT, {A: at(5, 50)}, quiet=True) == []  # the clock restarted at LIMIT + 1
    assert actions(watch.observe(2 * LIMIT + 1, {A: at(5, 50)}, quiet=True)) == {A: StallAction.RESUME}


def test_partitions_are_judged_one_by_one() -> None:
    watch = ProgressWatch(LIMIT)
    watch.observe(0.0, {A: at(5, 50), B: at(0, 10)}, quiet=True)
    stalls = watch.observe(LIMIT, {A: at(5, 50), B: at(7, 10)}, quiet=True)
    assert actions(stalls) == {A: StallAction.RESUME}


def test_a_partition_that_moved_away_starts_afresh_when_it_comes_back() -> None:
    watch = ProgressWatch(LIMIT)
    watch.observe(0.0, {A: at(5, 50)}, quiet=True)
    assert actions(watch.observe(LIMIT, {A: at(5, 50)}, quiet=True)) == {A: StallAction.RESUME}
    assert watch.observe(LIMIT + 1, {B: at(0, 10)}, quiet=True) == []  # A went to another worker
    assert watch.observe(LIMIT + 2, {A: at(5, 50)}, quiet=True) == []  # and came back
    assert actions(watch.observe(2 * LIMIT + 2, {A: at(5, 50)}, quiet=True)) == {A: StallAction.RESUME}


C = TP("ubscore-cursors-changelog", 2)
D = TP("ubscore-accounts-changelog", 2)


def test_a_recovery_position_is_pending_until_the_offset_applied_reaches_the_highwater() -> None:
    positions = recovery_positions({C: (-1, 204), D: (170, 171), TP("t", 0): (-1, -1)})
    assert positions[C] == Position(cursor=None, first=0, end=205) and positions[C].pending
    assert positions[D].pending
    assert not positions[TP("t", 0)].pending  # an empty changelog: nothing to wait for
    assert not recovery_positions({D: (171, 171)})[D].pending


def test_a_changelog_partition_that_receives_nothing_is_resumed_then_the_worker_exits() -> None:
    watch = RecoveryWatch(LIMIT)
    progress = {C: (-1, 204), D: (0, 171)}
    assert watch.observe(0.0, 3, progress) == []  # a new generation is never quiet
    assert watch.observe(1.0, 3, {C: (-1, 204), D: (171, 171)}) == []  # D recovers fully
    stalls = watch.observe(1.0 + LIMIT, 3, {C: (-1, 204), D: (171, 171)})
    assert actions(stalls) == {C: StallAction.RESUME}
    assert stalls[0].position.cursor is None and stalls[0].position.first == 0  # re-read from offset 0
    assert actions(watch.observe(1.0 + 2 * LIMIT, 3, {C: (-1, 204), D: (171, 171)})) == {C: StallAction.EXIT}


def test_a_new_recovery_generation_or_none_at_all_restarts_every_clock() -> None:
    watch = RecoveryWatch(LIMIT)
    watch.observe(0.0, 3, {C: (-1, 204)})
    watch.observe(1.0, 3, {C: (-1, 204)})
    assert watch.observe(LIMIT + 0.5, 4, {C: (-1, 204)}) == []  # rebalanced meanwhile: offsets rebuilt
    assert watch.observe(2 * LIMIT, 4, {C: (-1, 204)}) == []
    assert actions(watch.observe(2 * LIMIT + 0.5, 4, {C: (-1, 204)})) == {C: StallAction.RESUME}
    watch.observe(2 * LIMIT + 1, 4, {})  # the recovery completed
    assert watch.observe(3 * LIMIT + 2, 4, {C: (-1, 204)}) == []
