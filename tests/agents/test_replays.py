"""Replays after a kill between checkpoint steps 1 and 2, and ids used again after their window.

A kill after the result rows are acknowledged and before the accounts are leaves
rows of a first attempt whose account is lost; the inputs come back, maybe in
another interleaving of the two streams, and are decided again. What ends up
stored and published must be what one clean run of the new decisions gives.
Each test below rolls the account back by hand, as the crash would, and drops
the outputs the crash never sent.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from app.core.ledger import Account, Balance
from app.core.legs import Credit, Expiry
from app.core.models import MAX_TS
from app.partitioning import user_key
from app.settings import settings
from app.tables import accounts

from .conftest import Ledger, Sent, crash_before_accounts, holds_of

TS_MS = 1_700_000_000_000
WINDOW_MS = settings.results_retention_s * 1000


def op(op_id: str, kind: str, user_id: int = 11, asset: int = 1, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": user_id, "asset": asset, **extra}


def account(user_id: int = 11) -> Account:
    return Account.from_json(accounts.get(user_key(user_id)))


async def test_an_expiry_that_does_nothing_on_replay_leaves_no_row_to_answer_a_later_copy(
    ledger: Ledger, sent: Sent
) -> None:
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    before = accounts.data[user_key(11)]
    leg = json.dumps(Expiry(11, "h", TS_MS + 1000).to_json()).encode()
    await ledger.credit_raw(leg, 11, offset=1)  # hold_expired at seq 3, then the kill
    crash_before_accounts(sent, 11, before)
    await ledger.submit(offset=3, **op("u1", "unlock", hold_id="h"))  # this time the unlock comes first: seq 3
    await ledger.credit_raw(leg, 11, offset=1)  # the expiry, redelivered, finds no hold
    await ledger.credit_raw(leg, 11, offset=2)  # a second copy the timer had sent
    assert [(e["kind"], e["seq"]) for e in sent.values("events")] == [("unlock", 3)]
    assert account().balance(1) == Balance(100, 0)


async def test_a_lock_refused_on_replay_leaves_its_hold_id_free(ledger: Ledger, sent: Sent) -> None:
    credit = Credit(12, 11, "t1", 1, 100, TS_MS)
    await ledger.credit(credit.to_json(), offset=1)  # transfer_in 100 at seq 1
    await ledger.submit(offset=1, **op("l1", "lock", amount=60, hold_id="h"))  # accepted at seq 2, then the kill
    crash_before_accounts(sent, 11, Account().to_json())
    await ledger.submit(offset=1, **op("l1", "lock", amount=60, hold_id="h"))  # first this time: no funds yet
    await ledger.credit(credit.to_json(), offset=1)
    await ledger.submit(offset=2, **op("l2", "lock", amount=60, hold_id="h"))
    outcomes = [(e["op_id"], e["status"], e["reason"], e["seq"]) for e in sent.values("events")]
    assert outcomes == [
        ("l1", "rejected", "insufficient_funds", 1),
        ("t1", "accepted", None, 2),
        ("l2", "accepted", None, 3),
    ]
    assert holds_of(11)["h"].remaining == 60


async def test_a_hold_id_is_free_again_once_its_mark_is_past_the_window(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h"))
    await ledger.submit(offset=3, **op("u1", "unlock", hold_id="h"))
    await ledger.submit(offset=4, timestamp=(TS_MS + WINDOW_MS - 1) / 1000, **op("l2", "lock", amount=1, hold_id="h"))
    assert sent.values("events")[-1]["reason"] == "hold_exists"
    await ledger.submit(offset=5, timestamp=(TS_MS + WINDOW_MS) / 1000, **op("l3", "lock", amount=1, hold_id="h"))
    assert sent.values("events")[-1]["status"] == "accepted"


async def test_a_transfer_id_used_again_after_its_window_credits_the_payee_again(ledger: Ledger, sent: Sent) -> None:
    """The payee's row of the first use may outlive the payer's: the leg's own time decides, not the row's age."""
    await ledger.credit(Credit(12, 11, "t1", 1, 100, TS_MS).to_json(), offset=1)
    later = Credit(12, 11, "t1", 1, 100, TS_MS + WINDOW_MS)
    await ledger.credit(later.to_json(), offset=2)
    await ledger.credit(Credit(12, 11, "t1", 1, 100, TS_MS).to_json(), offset=1)  # the first, redelivered
    assert account().balance(1) == Balance(200, 0)
    assert {e["seq"] for e in sent.values("events")} == {1, 2}  # a redelivery gets a copy, never a new seq


async def test_an_operation_on_a_record_time_outside_the_range_moves_no_money(ledger: Ledger, sent: Sent) -> None:
    """A topic left on CreateTime lets a producer choose the time; the agent refuses to decide on such a time."""
    await ledger.submit(offset=1, timestamp=253_402_300_800.0, **op("d1", "deposit", amount=100))  # year 10000
    event = sent.values("events")[-1]
    assert (event["status"], event["reason"], event["ts"]) == ("rejected", "invalid_timestamp", MAX_TS)
    assert sent.values("dlq")[-1]["error"]["error"] == "invalid_timestamp"
    assert account().balance(1) == Balance(0, 0)


async def test_a_later_locks_mark_whose_account_a_kill_lost_does_not_refuse_an_earlier_lock(
    ledger: Ledger, sent: Sent
) -> None:
    """Simulator seed 1044: the later lock's mark is durable, its account is not; the earlier lock, decided
    again first, must meet the hold id as the clean run did: unused."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=50))
    before = accounts.data[user_key(11)]
    await ledger.submit(offset=2, **op("l1", "lock", amount=100, hold_id="h"))  # insufficient_funds
    await ledger.submit(offset=3, **op("l2", "lock", amount=10, hold_id="h"))  # accepted: marks h
    crash_before_accounts(sent, 11, before)
    await ledger.submit(offset=2, **op("l1", "lock", amount=100, hold_id="h"))
    await ledger.submit(offset=3, **op("l2", "lock", amount=10, hold_id="h"))
    outcomes = [(e["op_id"], e["status"], e["reason"], e["seq"]) for e in sent.values("events")]
    assert outcomes == [("l1", "rejected", "insufficient_funds", 2), ("l2", "accepted", None, 3)]
    assert holds_of(11)["h"].remaining == 10


async def test_an_expiry_that_found_no_hold_leaves_nothing_that_a_redelivery_could_contradict(
    ledger: Ledger, sent: Sent
) -> None:
    """Simulator seed 1705: a leg that released nothing (the lock's account was lost, its expiries row kept)
    records nothing, not even its offset; redelivered after the lock applied again, it is decided afresh, and
    a kill after that decision's result row finds it beyond the account and decides it the same way again."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    before = accounts.data[user_key(11)]
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    crash_before_accounts(sent, 11, before)
    leg = json.dumps(Expiry(11, "h", TS_MS + 1000).to_json()).encode()
    await ledger.credit_raw(leg, 11, offset=1)  # finds no hold: nothing
    assert sent.values("events") == [] and "credits" not in account().applied
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    locked = accounts.data[user_key(11)]
    await ledger.credit_raw(leg, 11, offset=1)  # redelivered: releases the hold now
    crash_before_accounts(sent, 11, locked)
    await ledger.credit_raw(leg, 11, offset=1)  # and once more after a kill: the same decision
    await ledger.credit_raw(leg, 11, offset=2)  # the timer's next copy: answered with that result
    assert [(e["kind"], e["seq"]) for e in sent.values("events")] == [("hold_expired", 3)] * 2
    assert account().balance(1) == Balance(100, 0)
