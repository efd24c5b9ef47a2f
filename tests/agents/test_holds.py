"""Holds through the agent: hold rows, expiry legs, the timer's due list, redelivery of a lock."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

from app.agents import expiry
from app.core.ledger import Account, Balance, hold_key
from app.core.legs import Expiry
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, expiries, expiry_row, results

from .conftest import Ledger, Sent, holds_of

TS_MS = 1_700_000_000_000


def op(op_id: str, kind: str, user_id: int = 11, asset: int = 1, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": user_id, "asset": asset, **extra}


def account(user_id: int = 11) -> Account:
    return Account.from_json(accounts.get(user_key(user_id)))


async def funded_hold(ledger: Ledger, expires_at_ms: int = TS_MS + 60_000) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("l1", "lock", amount=60, hold_id="order-1", expires_at_ms=expires_at_ms))


async def test_a_lock_opens_the_hold_marks_its_id_and_lists_its_expiry(ledger: Ledger, sent: Sent) -> None:
    await funded_hold(ledger)
    event = sent.values("events")[-1]
    assert (event["kind"], event["status"], event["hold_id"], event["locked"]) == ("lock", "accepted", "order-1", 60)
    assert holds_of(11)["order-1"].remaining == 60
    assert results.get(hold_key(11, "order-1").encode()) == {"hold": ["operations", 1], "at": 1_700_000_000_000}
    due = Expiry(11, "order-1", TS_MS + 60_000)
    assert expiries.get(expiry_row(due)) == due.to_json()


async def test_a_used_hold_id_never_opens_again(ledger: Ledger, sent: Sent) -> None:
    await funded_hold(ledger)
    await ledger.submit(**op("u1", "unlock", hold_id="order-1"))
    assert sent.values("events")[-1]["amount"] == 60
    assert holds_of(11) == {}
    await ledger.submit(**op("l2", "lock", amount=10, hold_id="order-1"))
    assert (sent.values("events")[-1]["reason"], account().balance(1)) == ("hold_exists", Balance(100, 0))


async def test_a_redelivered_lock_whose_account_was_lost_opens_its_hold_again(ledger: Ledger, sent: Sent) -> None:
    """The mark is durable before the account: found with the lock's own origin, it does not refuse it."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="order-1"))
    lost = Account(seq=1, balances={1: Balance(100, 0)}, applied={"operations": 1})
    accounts.data[user_key(11)] = lost.to_json()  # a crash after the results, before the accounts
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="order-1"))
    first, again = sent.values("events")[-2:]
    assert first == again and again["status"] == "accepted"
    assert holds_of(11)["order-1"].remaining == 60


async def test_an_expiry_leg_releases_the_hold_once_and_clears_its_row(ledger: Ledger, sent: Sent) -> None:
    await funded_hold(ledger)
    leg = Expiry(11, "order-1", TS_MS + 60_000)
    await ledger.credit_raw(json.dumps(leg.to_json()).encode(), 11)
    event = sent.values("events")[-1]
    assert (event["kind"], event["amount"], event["available"], event["locked"], event["seq"]) == (
        "hold_expired",
        60,
        100,
        0,
        3,
    )
    assert holds_of(11) == {}
    assert expiries.get(expiry_row(leg)) is None
    await ledger.credit_raw(json.dumps(leg.to_json()).encode(), 11)  # the timer sent it twice
    assert sent.values("events")[-1] == event  # the first result, re-sent; nothing released again
    assert account().balance(1) == Balance(100, 0)


async def test_an_expiry_leg_for_a_closed_hold_changes_nothing(ledger: Ledger, sent: Sent) -> None:
    await funded_hold(ledger)
    await ledger.submit(**op("u1", "unlock", hold_id="order-1"))
    events = len(sent.values("events"))
    await ledger.credit_raw(json.dumps(Expiry(11, "order-1", TS_MS + 60_000).to_json()).encode(), 11)
    assert len(sent.values("events")) == events
    assert account().seq == 3


async def test_a_forged_leg_is_dead_lettered(ledger: Ledger, sent: Sent) -> None:
    await ledger.credit_raw(b'{"leg": "expire", "user_id": 11, "hold_id": "x"}', 11)
    await ledger.credit_raw(b'{"leg": "mint", "user_id": 11}', 11)
    assert [letter["error"]["error"] for letter in sent.values("dlq")] == ["invalid_leg", "invalid_leg"]
    assert sent.values("events") == []


class Assigned:
    def __init__(self, partitions: List[int]) -> None:
        from faust.types import TP

        from app.topics import OPERATIONS

        self.tps = {TP(OPERATIONS, p) for p in partitions}

    def assignment(self) -> Any:
        return self.tps


async def test_the_timer_sends_due_expiries_of_owned_partitions_once(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = partition_for(user_key(11), settings.partitions)
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("l1", "lock", amount=10, hold_id="soon", expires_at_ms=TS_MS + 1_000))
    await ledger.submit(**op("l2", "lock", amount=10, hold_id="later", expires_at_ms=TS_MS + 9_000))
    sends: List[Tuple[bytes, Dict[str, Any], int]] = []

    async def send(key: bytes, value: bytes, partition: int) -> None:
        sends.append((key, json.loads(value), partition))

    monkeypatch.setattr(expiry.credits_topic, "send", send)
    monkeypatch.setattr(expiry.app, "_consumer", Assigned([home]))
    assert await expiry.send_due(TS_MS + 999, monotonic=0.0) == 0
    assert await expiry.send_due(TS_MS + 1_000, monotonic=1.0) == 1
    assert sends == [(b"11", Expiry(11, "soon", TS_MS + 1_000).to_json(), home)]
    assert await expiry.send_due(TS_MS + 5_000, monotonic=2.0) == 0  # on its way: not sent again at once
    assert await expiry.send_due(TS_MS + 5_000, monotonic=1.0 + expiry.RESEND_AFTER_S) == 1  # lost? sent again
    monkeypatch.setattr(expiry.app, "_consumer", Assigned([p for p in range(settings.partitions) if p != home]))
    assert await expiry.send_due(TS_MS + 99_000, monotonic=100.0) == 0  # not ours: another worker's timer
