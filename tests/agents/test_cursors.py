"""The agent's input cursor (the ``cursors`` table): the highest offset applied per input partition.

The hole filler trusts it: a cursor left behind makes every later record look like
the end of a hole, and a cursor moved back by a redelivery makes the filler read and
re-handle records already applied. Both are silent in the events, so they are
checked on the table itself.
"""

from __future__ import annotations

from typing import Any, Dict

from app import metrics
from app.guards.input_gaps import cursor_key
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
