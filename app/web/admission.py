"""How long the records ahead of an operation will take at its owner: the gateway's fast 503 under overload.

The owner's partitions are served in turn, so an operation waits not only for
the records before it on its own partition but for about as many on each of the
owner's other partitions with a backlog. The owner's rate is measured over the
whole worker, which moves with every checkpoint, while one partition's cursor
moves in steps and may stand still for seconds while the others are served.
"""

from __future__ import annotations

from typing import Iterable, Optional

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
