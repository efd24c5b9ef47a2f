"""Deciding when a partition is stalled, and what to do about it: plain code, no I/O.

app.guards.input_watch gathers the facts of the input every few seconds (cursor,
Kafka's offsets, whether anything legitimate holds the input back) and
app.guards.recovery_watch those of a table recovery; both carry out the steps
decided here, and their docstrings say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Dict, List, Mapping, Optional, Set, Tuple

from faust.types import TP


class StallAction(StrEnum):
    """What the watch does about a stalled partition: resume it in place, or exit for a restart."""

    RESUME = "resume"
    EXIT = "exit"


@dataclass(frozen=True)
class Position:
    """What is known about one input partition: the agent's cursor and Kafka's offsets."""

    cursor: Optional[int]  # highest offset applied, None if none ever was
    first: int  # earliest offset Kafka still holds
    end: int  # offset the next record will get

    @property
    def next_offset(self) -> int:
        """The record to read from on a resume: the one after the cursor, or the first one."""
        return self.cursor + 1 if self.cursor is not None else self.first

    @property
    def pending(self) -> bool:
        """Records wait in Kafka beyond what the agent applied."""
        return self.end > (self.cursor + 1 if self.cursor is not None else self.first)


@dataclass(frozen=True)
class Stall:
    """An input partition with pending records and a cursor that has not moved for ``idle_s``."""

    tp: TP
    position: Position
    idle_s: float
    action: str


class ProgressWatch:
    """Turns periodic observations into stalls and the step to take for each (no I/O).

    A partition can starve while others flow: Faust hands the agent one fetched
    batch at a time, and a topic with fewer records in it runs dry first
    (docs/fault-injection.md, finding 12). A restart would not help there, and restarts under
    load cause the rebalances that build such batches, so the exit is kept for
    a worker whose input made no progress at all for a whole period.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._since: Dict[TP, Tuple[Optional[int], float]] = {}
        self._resumed: Set[TP] = set()
        self._progress_at: Optional[float] = None

    def observe(self, now: float, positions: Mapping[TP, Position], quiet: bool) -> List[Stall]:
        """The partitions stalled at ``now``; ``quiet`` is False while something holds all input back.

        A partition's clock restarts whenever its cursor moves, nothing is
        pending, or the input is not quiet. A stalled partition gets ``resume``
        and its clock restarts, so the resume is given a full period. One
        resumed before and stalled again gets ``exit`` if no owned partition
        moved for a whole period either, and ``resume`` again otherwise.
        """
        if self._progress_at is None or not quiet or not positions:
            self._progress_at = now
        since: Dict[TP, Tuple[Optional[int], float]] = {}
        stalls: List[Stall] = []
        for tp, position in positions.items():
            previous = self._since.get(tp)
            moved = previous is None or previous[0] != position.cursor
            if previous is not None and moved:
                self._progress_at = now
            if moved or not position.pending:
                self._resumed.discard(tp)
            waiting_since = now if previous is None or moved or not position.pending or not quiet else previous[1]
            since[tp] = (position.cursor, waiting_since)
        all_idle = now - self._progress_at >= self.limit_s
        for tp, position in positions.items():
            started = since[tp][1]
            if now - started < self.limit_s:
                continue
            action = StallAction.EXIT if tp in self._resumed and all_idle else StallAction.RESUME
            stalls.append(Stall(tp, position, now - started, action))
            self._resumed.add(tp)
            since[tp] = (position.cursor, now)
        self._resumed &= set(positions)
        self._since = since
        return stalls


def recovery_positions(progress: Mapping[TP, Tuple[int, int]]) -> Dict[TP, Position]:
    """A recovery's (offset applied, highwater) per changelog partition, as positions: the offset is the cursor."""
    return {
        tp: Position(cursor=offset if offset >= 0 else None, first=offset + 1, end=highwater + 1)
        for tp, (offset, highwater) in progress.items()
    }


class RecoveryWatch:
    """Observations of the table recovery under way, turned into stalls.

    A new recovery generation is not quiet: its offsets and highwaters are
    being rebuilt, and every clock starts again.
    """

    def __init__(self, limit_s: float) -> None:
        self.watch = ProgressWatch(limit_s)
        self.generation: Optional[int] = None

    def observe(self, now: float, generation: int, progress: Mapping[TP, Tuple[int, int]]) -> List[Stall]:
        """The changelog partitions stalled at ``now``, with the step to take for each."""
        quiet = bool(progress) and generation == self.generation
        self.generation = generation
        return self.watch.observe(now, recovery_positions(progress), quiet)
