"""Deciding when an input partition is stalled, and what to do about it: plain code, no I/O.

app.input_watch gathers the facts every few seconds (cursor, Kafka's offsets,
whether anything legitimate holds the input back) and carries out the steps
decided here; the reasons are in its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from faust.types import TP

RESUME = "resume"
EXIT = "exit"

#: Exit status of a worker whose input stayed stalled after a resume (EX_SOFTWARE: restart it).
EXIT_STALLED = 70


@dataclass(frozen=True)
class Position:
    """What is known about one input partition: the agent's cursor and Kafka's offsets."""

    cursor: Optional[int]  # highest offset applied, None if none ever was
    first: int  # earliest offset Kafka still holds
    end: int  # offset the next record will get

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
    """Turns periodic observations into stalls and the step to take for each (no I/O)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._since: Dict[TP, Tuple[Optional[int], float]] = {}
        self._resumed: Dict[TP, Optional[int]] = {}

    def observe(self, now: float, positions: Mapping[TP, Position], quiet: bool) -> List[Stall]:
        """The partitions stalled at ``now``; ``quiet`` is False while something holds all input back.

        A partition's clock restarts whenever its cursor moves, nothing is
        pending, or the input is not quiet. A partition already resumed once
        and still stalled at the same cursor gets ``exit``; any other gets
        ``resume`` and its clock restarts, so the resume is given a full period.
        """
        since: Dict[TP, Tuple[Optional[int], float]] = {}
        stalls: List[Stall] = []
        for tp, position in positions.items():
            previous = self._since.get(tp)
            moved = previous is None or previous[0] != position.cursor
            if moved or not position.pending:
                self._resumed.pop(tp, None)
            started = now if moved or not position.pending or not quiet else previous[1]
            since[tp] = (position.cursor, started)
            if now - started < self.limit_s:
                continue
            action = EXIT if tp in self._resumed else RESUME
            stalls.append(Stall(tp, position, now - started, action))
            if action == RESUME:
                self._resumed[tp] = position.cursor
                since[tp] = (position.cursor, now)
        for gone in set(self._resumed) - set(positions):
            del self._resumed[gone]
        self._since = since
        return stalls
