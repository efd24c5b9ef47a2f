"""The agent's input cursor (the ``cursors`` table): the highest offset applied per input partition.

The hole filler trusts it: a cursor left behind makes every later record look like
the end of a hole, and a cursor moved back by a redelivery makes the filler read and
re-handle records already applied. Both are silent in the events, so they are
checked on the table itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from app.agents import ubscore
from app.guards.input_gaps import cursor_key
from app.observability import metrics
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import cursors
from app.topics import OPERATIONS

from .conftest import Ledger, Sent

USER = 11


def deposit(op_id: str) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": USER, "asset": 1, "amount": 1}


def cursor() -> Any:
    return cursors.get(cursor_key(OPERATIONS, partition_for(user_key(USER), settings.partitions)))


async def test_the_cursor_follows_every_applied_message(ledger: Ledger, sent: Sent) -> None:
    gaps = metrics.value("ubscore_input_gaps_total")
    for offset in (10, 11, 12):
        await ledger.submit(offset=offset, **deposit(f"d{offset}"))
        assert cursor() == offset
    assert metrics.value("ubscore_input_gaps_total") == gaps  # consecutive offsets are no hole
    assert [e["seq"] for e in sent.values("events")] == [1, 2, 3]


async def test_a_redelivered_older_message_does_not_move_the_cursor_back(ledger: Ledger, sent: Sent) -> None:
    for offset in (20, 21, 22):
        await ledger.submit(offset=offset, **deposit(f"d{offset}"))
    await ledger.submit(offset=21, **deposit("d21"))  # Kafka redelivers it
    assert cursor() == 22
    assert [e["op_id"] for e in sent.values("events")] == ["d20", "d21", "d22", "d21"]


async def test_records_skipped_before_the_first_cursor_of_a_partition_are_read_back(ledger: Ledger, sent: Sent) -> None:
    """No cursor means nothing applied there: a first record past offset 0 ends a hole from the start."""
    gaps = metrics.value("ubscore_input_gaps_total")
    ledger.skip(deposit("first"), offset=0)
    ledger.skip(deposit("second"), offset=1)
    await ledger.submit(offset=2, **deposit("third"))
    assert [e["op_id"] for e in sent.values("events")] == ["first", "second", "third"]
    assert [e["seq"] for e in sent.values("events")] == [1, 2, 3]
    assert metrics.value("ubscore_input_gaps_total") == gaps + 1
    assert cursor() == 2


async def test_a_first_record_with_nothing_before_it_in_kafka_is_no_hole(ledger: Ledger, sent: Sent) -> None:
    gaps = metrics.value("ubscore_input_gaps_total")
    await ledger.submit(offset=40, **deposit("after_retention"))  # offsets 0-39 removed by retention
    assert [e["op_id"] for e in sent.values("events")] == ["after_retention"]
    assert metrics.value("ubscore_input_gaps_total") == gaps


async def test_a_hole_larger_than_a_batch_is_read_and_applied_in_chunks_of_a_batch(
    ledger: Ledger, sent: Sent, monkeypatch: Any
) -> None:
    """A hole is never one read nor one batch: each chunk is at most UBS_BATCH_MAX records, cursor after it."""
    monkeypatch.setattr(ubscore, "settings", dataclasses.replace(settings, batch_max=3))
    gaps = metrics.value("ubscore_input_gaps_total")
    for offset in range(50, 58):
        ledger.skip(deposit(f"h{offset}"), offset=offset)
    await ledger.submit(offset=49, **deposit("before"))
    await ledger.submit(offset=58, **deposit("after"))
    assert [e["op_id"] for e in sent.values("events")] == ["before", *[f"h{o}" for o in range(50, 58)], "after"]
    assert [e["seq"] for e in sent.values("events")] == list(range(1, 11))
    holes = [read for read in ledger.reads if read[2] is not None and read[2] >= 50]
    assert [(start, limit) for _, _, start, _, limit in holes] == [(50, 3), (53, 3), (56, 3)]
    assert cursor() == 58
    assert metrics.value("ubscore_input_gaps_total") == gaps + 1  # one hole, however many chunks
