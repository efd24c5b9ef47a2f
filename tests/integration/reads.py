"""Acknowledged writes and balance reads of a fault-injection run, and the stale-read check over them.

A read is stale when it shows a user's account older than a write that a gateway had already
acknowledged, with its seq, before the read began: the linearizability of one register per user,
checked the way Jepsen's Kafka and Redpanda analyses check reads (docs/fault-injection.md).
Plain data and one pure function, so the unit tests run it without a stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple


@dataclass
class Ack:
    user_id: int
    op_id: str
    status: int
    body: Dict[str, Any]
    #: When the answer came (time.monotonic()).
    at: float = 0.0


@dataclass
class Read:
    """One balance read: when it began (time.monotonic()), through which worker, and what it answered."""

    user_id: int
    began: float
    worker: int
    status: int
    #: The seq answered (0 for a user the worker says it has never seen); None for a refusal.
    seq: Optional[int]
    min_seq: int = 0
    error: Optional[str] = None


def stale_reads(acks: Iterable[Ack], reads: Iterable[Read]) -> List[str]:
    """Every read older than a write a gateway acknowledged (200, with its seq) before the read began."""
    answered: Dict[int, List[Tuple[float, int]]] = {}
    for ack in acks:
        if ack.status == 200 and isinstance(ack.body.get("seq"), int):
            answered.setdefault(ack.user_id, []).append((ack.at, ack.body["seq"]))
    stale = []
    for read in reads:
        if read.seq is None:
            continue
        known = max((seq for at, seq in answered.get(read.user_id, []) if at < read.began), default=0)
        if read.seq < known:
            stale.append(
                f"stale read of user {read.user_id} through worker {read.worker}: seq {read.seq} "
                f"(min_seq {read.min_seq}) after seq {known} was acknowledged"
            )
    return stale
