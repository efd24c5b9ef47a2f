"""The fault-injection suite's stale-read check (tests/integration/reads.py)."""

from __future__ import annotations

from tests.integration.reads import Ack, Read, stale_reads

USER = 7


def ack(seq: int, at: float, status: int = 200) -> Ack:
    body = {"seq": seq} if status == 200 else {"op_id": "x"}
    return Ack(USER, f"op-{seq}", status, body, at)


def read(seq: int | None, began: float, status: int = 200) -> Read:
    return Read(USER, began, worker=1, status=status, seq=seq)


def test_a_read_older_than_a_write_acknowledged_before_it_began_is_stale() -> None:
    acks = [ack(1, at=10.0), ack(2, at=20.0)]
    (problem,) = stale_reads(acks, [read(1, began=20.5)])
    assert "seq 1" in problem and "after seq 2" in problem


def test_reads_that_overlap_the_write_or_refuse_are_not_stale() -> None:
    acks = [ack(1, at=10.0), ack(2, at=20.0)]
    reads = [
        read(1, began=19.0),  # began before seq 2 was acknowledged: either answer is right
        read(2, began=21.0),
        read(3, began=21.0),  # a later write, acknowledged to another client or not yet answered
        read(None, began=30.0, status=503),  # a refusal shows nothing
    ]
    assert stale_reads(acks, reads) == []


def test_a_user_read_as_unknown_after_an_acknowledged_write_is_stale() -> None:
    assert stale_reads([ack(1, at=10.0)], [read(0, began=11.0, status=404)]) != []


def test_an_acknowledgement_without_a_seq_promises_nothing_about_reads() -> None:
    assert stale_reads([ack(5, at=10.0, status=202)], [read(0, began=11.0, status=404)]) == []
