"""The gateway's fast 503s under overload: too many requests waiting here, or a backlog a wait cannot meet.

A request waiting for a result holds a task, its connection and, at the user's
owner, a watched key, until the result comes or its wait ends (up to
UBS_WAIT_TIMEOUT_S): ``Slots`` bounds how many may at once (UBS_WEB_MAX_WAITERS),
so clients cannot hold as many as they can open connections.

The backlog ahead of an operation, at its owner: the owner's partitions are
served in turn, so an operation waits not only for the records before it on its
own partition but for about as many on each of the owner's other partitions
with a backlog. The owner's rate is measured over the whole worker, which moves
with every checkpoint, while one partition's cursor moves in steps and may stand
still for seconds while the others are served.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

#: A wait measures the owner's rate for at least this long before it may refuse (503) as too slow.
PROBE_S = 0.5


def records_before(ahead: int, other_lags: Iterable[int]) -> int:
    """Records the owner applies before the operation: ``ahead`` on its partition, and a share of each other backlog."""
    if ahead <= 0:
        return 0
    return ahead + sum(min(max(lag, 0), ahead) for lag in other_lags)


def backlog_s(records: int, done: int, elapsed_s: float) -> Optional[float]:
    """Seconds until ``records`` more are applied at the rate seen so far; None without a rate yet."""
    if records <= 0 or elapsed_s < PROBE_S / 2 or done <= 0:
        return None
    return records / (done / elapsed_s)


class Slots:
    """At most ``limit`` holders at once; the next is turned away, never queued (a queue would hold as much)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def take(self) -> Iterator[bool]:
        """A slot for the block if one is free: yields whether it was taken."""
        if self.held >= self.limit:
            yield False
            return
        self.held += 1
        try:
            yield True
        finally:
            self.held -= 1
