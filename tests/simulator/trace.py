"""What a run did, in order, stamped with the simulated time: faults always, every step when verbose.

The trace is the replay's proof: the same seed gives the same lines, so a failing
seed's trace read with ``--verbose`` is the run that failed.
"""

from __future__ import annotations

from typing import List

from tests.simulator.kafka import Clock


class Trace:
    """Lines of one run; ``faults`` keeps only the faults and phases, for a failure's short report."""

    def __init__(self, clock: Clock, verbose: bool) -> None:
        self.clock = clock
        self.start_ms = clock.now_ms
        self.verbose = verbose
        self.lines: List[str] = []
        self.faults: List[str] = []

    def _stamp(self, text: str) -> str:
        return f"{(self.clock.now_ms - self.start_ms) / 1000:>14.3f}s  {text}"

    def note(self, text: str) -> None:
        """A step of the run (kept only when verbose)."""
        if self.verbose:
            self.lines.append(self._stamp(text))

    def fault(self, text: str) -> None:
        """A fault or a phase: kept always."""
        line = self._stamp(text)
        self.faults.append(line)
        if self.verbose:
            self.lines.append(line)
