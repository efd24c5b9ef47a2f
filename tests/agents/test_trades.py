"""Trades through the agent: each step on its user's partition, legs between them, redelivery of each."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from app.core import trading
from app.core.ledger import Account, Balance, StoredResult, operation_key
from app.partitioning import user_key
from app.tables import accounts, results

from .conftest import Ledger, Sent, holds_of

BUYER, SELLER, FEES = 11, 22, 99
BASE, QUOTE = 1, 2


def op(op_id: str, kind: str, user_id: int, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": user_id, **extra}


def trade(**changes: Any) -> Dict[str, Any]:
    body = op(
        "t-1",
        "trade",
        BUYER,
        buyer={"user_id": BUYER, "hold_id": "buy-1"},
        seller={"user_id": SELLER, "hold_id": "sell-1"},
        base_asset=BASE,
        quote_asset=QUOTE,
        base_amount=3,
        quote_amount=6000,
        buyer_fee=1,
        seller_fee=60,
        fee_account=FEES,
    )
    return {**body, **changes}


def balances(user_id: int) -> Dict[int, Balance]:
    return dict(Account.from_json(accounts.get(user_key(user_id))).balances)


async def open_orders(ledger: Ledger) -> None:
    await ledger.submit(**op("d", "deposit", BUYER, asset=QUOTE, amount=10_000))
    await ledger.submit(**op("o", "lock", BUYER, asset=QUOTE, amount=10_000, hold_id="buy-1"))
    await ledger.submit(**op("d", "deposit", SELLER, asset=BASE, amount=5))
    await ledger.submit(**op("o", "lock", SELLER, asset=BASE, amount=5, hold_id="sell-1"))


async def deliver(ledger: Ledger, sent: Sent, start: int) -> int:
    """Feed every leg sent since index ``start`` back to the agent, as Kafka would; the new index."""
    values, keys = sent.values("credits"), sent.keys("credits")
    for value, key in zip(values[start:], keys[start:], strict=True):
        assert key is not None
        await ledger.credit_raw(json.dumps(value).encode(), int(key))
    return len(values)


async def test_a_trade_runs_its_chain_and_each_user_gets_one_event(ledger: Ledger, sent: Sent) -> None:
    await open_orders(ledger)
    before = len(sent.values("events"))
    await ledger.submit(**trade())
    assert len(sent.values("events")) == before  # reserved: nothing to announce yet
    pending = StoredResult.from_json(results.get(operation_key(BUYER, "t-1").encode()))
    assert pending is not None and pending.event is None
    assert [(v["leg"], k) for v, k in zip(sent.values("credits"), sent.keys("credits"), strict=True)] == [
        ("trade_sell", b"22")
    ]
    seen = await deliver(ledger, sent, 0)  # the seller delivers: settle and fee legs
    assert [v["leg"] for v in sent.values("credits")[seen:]] == ["trade_settle", "trade_fee"]
    await deliver(ledger, sent, seen)
    events = {e["role"]: e for e in sent.values("events")[before:]}
    assert set(events) == {"buyer", "seller", "fee"}
    assert all(e["status"] == "accepted" and e["kind"] == "trade" for e in events.values())
    assert balances(BUYER) == {QUOTE: Balance(0, 4000), BASE: Balance(2, 0)}
    assert balances(SELLER) == {BASE: Balance(0, 2), QUOTE: Balance(5940, 0)}
    assert balances(FEES) == {BASE: Balance(1, 0), QUOTE: Balance(60, 0)}
    final = StoredResult.from_json(results.get(operation_key(BUYER, "t-1").encode()))
    assert final is not None and final.event is not None and final.event.to_json() == events["buyer"]


async def test_every_step_redelivered_repeats_nothing(ledger: Ledger, sent: Sent) -> None:
    await open_orders(ledger)
    before = len(sent.values("events"))
    await ledger.submit(**trade())
    seen = await deliver(ledger, sent, 0)
    await deliver(ledger, sent, seen)
    settled = {user: balances(user) for user in (BUYER, SELLER, FEES)}
    first = sent.values("events")[before:]
    legs = sent.values("credits")
    for value, key in zip(legs, sent.keys("credits"), strict=True):  # every leg again, as after a crash
        assert key is not None
        await ledger.credit_raw(json.dumps(value).encode(), int(key))
    await ledger.submit(**trade())  # and a client retry of the trade
    assert {user: balances(user) for user in (BUYER, SELLER, FEES)} == settled
    again = sent.values("events")[before + len(first) :]
    assert again and all(event in first for event in again)  # the first results, re-sent


async def test_a_refused_trade_changes_no_balance_anywhere(ledger: Ledger, sent: Sent) -> None:
    await open_orders(ledger)
    before_events = len(sent.values("events"))
    start = {user: balances(user) for user in (BUYER, SELLER)}
    await ledger.submit(**trade(base_amount=6, buyer_fee=0))  # the seller's order holds only 5
    seen = await deliver(ledger, sent, 0)
    assert [v["leg"] for v in sent.values("credits")[seen:]] == ["trade_settle"]
    await deliver(ledger, sent, seen)
    (event,) = sent.values("events")[before_events:]
    assert (event["user_id"], event["status"], event["reason"], event["role"]) == (
        BUYER,
        "rejected",
        "insufficient_hold",
        "buyer",
    )
    assert {user: balances(user) for user in (BUYER, SELLER)} == start
    assert balances(FEES) == {}


async def test_a_trade_the_buyer_cannot_pay_is_answered_at_once(ledger: Ledger, sent: Sent) -> None:
    await open_orders(ledger)
    await ledger.submit(**trade(buyer={"user_id": BUYER, "hold_id": "missing"}))
    event = sent.values("events")[-1]
    assert (event["status"], event["reason"], event["reserved_after_seq"]) == ("rejected", "unknown_hold", None)
    assert sent.values("credits") == []


async def test_an_invalid_trade_on_the_topic_is_rejected_and_dead_lettered(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**trade(seller={"user_id": BUYER, "hold_id": "x"}))
    event = sent.values("events")[-1]
    assert (event["kind"], event["status"], event["reason"]) == ("trade", "rejected", "self_trade")
    assert sent.values("dlq")[-1]["error"]["field"] == "seller.user_id"


async def test_a_seller_step_that_raises_refuses_the_trade_and_frees_the_reservation(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    await open_orders(ledger)
    before = len(sent.values("events"))

    def broken(account: Account, leg: Any) -> Any:
        raise RuntimeError("a bug in the seller's step")

    monkeypatch.setattr(trading, "sell", broken)
    await ledger.submit(**trade())
    seen = await deliver(ledger, sent, 0)
    assert [(v["leg"], v["reason"]) for v in sent.values("credits")[seen:]] == [("trade_settle", "processing_failed")]
    await deliver(ledger, sent, seen)
    (event,) = sent.values("events")[before:]
    assert (event["role"], event["status"], event["reason"]) == ("buyer", "rejected", "processing_failed")
    assert holds_of(BUYER)["buy-1"].pending == 0
    assert sent.values("dlq")[-1]["error"]["error"] == "processing_failed"


async def test_a_first_step_redelivered_before_its_lost_settle_waits_for_the_settle(ledger: Ledger, sent: Sent) -> None:
    """Killed after the settle leg's result write and before its account write (checkpoint rule 2): the trade's
    result is the settled one, the buyer's account still the pending one. The trade's first step can come back
    before the settle leg; it must announce nothing, and the settle leg, back too, applies again."""
    await open_orders(ledger)
    await ledger.submit(**trade())
    result_key = operation_key(BUYER, "t-1").encode()
    first_step = StoredResult.from_json(results.get(result_key)).origin
    seen = await deliver(ledger, sent, 0)  # the seller delivers and sends the settle leg
    pending = accounts.get(user_key(BUYER))
    settle = [(value, key) for value, key in zip(sent.values("credits"), sent.keys("credits"), strict=True)]
    await deliver(ledger, sent, seen)
    settled, settled_at = balances(BUYER), StoredResult.from_json(results.get(result_key)).origin
    accounts.data[user_key(BUYER)] = pending  # what RocksDB holds after the crash
    buyer_events = len([e for e in sent.values("events") if e["user_id"] == BUYER])

    await ledger.submit(offset=first_step.offset, **trade())  # the first step, redelivered
    assert len([e for e in sent.values("events") if e["user_id"] == BUYER]) == buyer_events  # nothing announced
    for value, key in settle[seen:]:
        if key == user_key(BUYER):  # the settle leg, redelivered
            await ledger.credit_raw(json.dumps(value).encode(), BUYER, offset=settled_at.offset)
    again = [e for e in sent.values("events") if e["user_id"] == BUYER][buyer_events:]
    assert [(e["kind"], e["status"], e["seq"]) for e in again] == [("trade", "accepted", pending["seq"] + 1)]
    assert balances(BUYER) == settled
