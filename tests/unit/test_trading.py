"""Trades in the pure core: the four steps, every refusal, fees, release of the rest, reservations."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict, List, Tuple

import pytest

from app.core import trading
from app.core.ledger import MAX_BALANCE, Account, Balance, Hold, apply_expiry, apply_operation
from app.core.legs import Expiry, TradeLeg, read_leg
from app.core.models import Change, Event, Operation, Party, Trade, parse_operation, parse_trade, read_event
from app.errors import InvalidOperation

TS = 1_700_000_000_000
BUYER, SELLER, FEES = 11, 22, 99
BASE, QUOTE = 1, 2  # BTC-like base, USDT-like quote


def trade(**changes: Any) -> Trade:
    terms = Trade(
        op_id="t-1",
        buyer=Party(BUYER, "buy-1"),
        seller=Party(SELLER, "sell-1"),
        base_asset=BASE,
        quote_asset=QUOTE,
        base_amount=3,
        quote_amount=6000,
        buyer_fee=1,
        seller_fee=60,
        fee_account=FEES,
    )
    return replace(terms, **changes)


def holding(asset: int, locked: int, hold_id: str, available: int = 0, **hold: Any) -> Account:
    return Account(seq=5, balances={asset: Balance(available, locked)}, holds={hold_id: Hold(asset, locked, **hold)})


def buyer() -> Account:
    return holding(QUOTE, 10_000, "buy-1", available=500)


def seller() -> Account:
    return holding(BASE, 5, "sell-1")


def run(terms: Trade, buyer_account: Account, seller_account: Account) -> Tuple[Account, Account, Account, List[Event]]:
    """The whole chain, each step fed the legs of the one before; the final accounts and every event."""
    reserved = trading.reserve(buyer_account, terms, TS)
    assert reserved.event is None, reserved.event
    (sell_leg,) = reserved.legs
    sold = trading.sell(seller_account, sell_leg)
    settle_leg, *fee_legs = sold.legs
    settled = trading.settle(reserved.account, settle_leg)
    fee_account, events = Account(), [sold.event, settled.event]
    for leg in fee_legs:
        collected = trading.collect_fee(fee_account, leg)
        fee_account = collected.account
        events.append(collected.event)
    return settled.account, sold.account, fee_account, [e for e in events if e is not None]


def total(*accounts: Account) -> Dict[int, int]:
    sums: Dict[int, int] = {}
    for account in accounts:
        for asset, balance in account.balances.items():
            sums[asset] = sums.get(asset, 0) + balance.available + balance.locked
    return sums


def test_reserve_holds_the_quote_without_changing_balances_or_seq() -> None:
    outcome = trading.reserve(buyer(), trade(), TS)
    assert outcome.event is None
    assert outcome.account.seq == 5
    assert outcome.account.balances == buyer().balances
    assert outcome.account.holds["buy-1"] == Hold(QUOTE, 10_000, pending=6000)
    assert outcome.legs == (TradeLeg("sell", trade(), TS, 5),)


def test_a_delivered_trade_moves_every_leg_and_conserves_each_asset() -> None:
    b, s, f, events = run(trade(), buyer(), seller())
    assert b.balances == {QUOTE: Balance(500, 4000), BASE: Balance(2, 0)}
    assert b.holds == {"buy-1": Hold(QUOTE, 4000)}
    assert s.balances == {BASE: Balance(0, 2), QUOTE: Balance(5940, 0)}
    assert s.holds == {"sell-1": Hold(BASE, 2)}
    assert f.balances == {BASE: Balance(1, 0), QUOTE: Balance(60, 0)}
    assert total(b, s, f) == total(buyer(), seller())
    by_role = {e.role: e for e in events}
    assert set(by_role) == {"buyer", "seller", "fee"}
    assert all(e.kind == "trade" and e.status == "accepted" and e.trade == trade() for e in events)
    assert by_role["buyer"].changes == (Change(BASE, 2, 0), Change(QUOTE, 500, 4000))
    assert (by_role["buyer"].seq, by_role["buyer"].reserved_after_seq, by_role["buyer"].counterparty) == (6, 5, SELLER)
    assert (by_role["seller"].seq, by_role["seller"].hold_id, by_role["seller"].counterparty) == (6, "sell-1", BUYER)
    assert by_role["fee"].changes == (Change(BASE, 1, 0), Change(QUOTE, 60, 0))
    assert by_role["fee"].user_id == FEES


def test_a_trade_without_fees_sends_no_fee_leg() -> None:
    _, _, fee_account, events = run(trade(buyer_fee=0, seller_fee=0, fee_account=None), buyer(), seller())
    assert [e.role for e in events] == ["seller", "buyer"]
    assert fee_account == Account()


def test_the_fee_account_hears_only_of_the_fees_it_took() -> None:
    *_, events = run(trade(buyer_fee=0), buyer(), seller())
    assert events[-1].changes == (Change(QUOTE, 60, 0),)


@pytest.mark.parametrize(
    ("seller_account", "reason"),
    [
        (Account(seq=2), "unknown_hold"),
        (holding(BASE, 2, "sell-1"), "insufficient_hold"),
        (holding(QUOTE, 5, "sell-1"), "hold_asset_mismatch"),
        (holding(BASE, 5, "sell-1", expires_at_ms=TS), "hold_expired"),
    ],
)
def test_a_seller_that_cannot_deliver_changes_nothing_anywhere(seller_account: Account, reason: str) -> None:
    reserved = trading.reserve(buyer(), trade(), TS)
    refused = trading.sell(seller_account, reserved.legs[0])
    assert (refused.account, refused.event) == (seller_account, None)
    (leg,) = refused.legs
    assert (leg.step, leg.reason) == ("settle", reason)
    settled = trading.settle(reserved.account, leg)
    assert settled.account.balances == buyer().balances
    assert settled.account.holds == buyer().holds
    event = settled.event
    assert event is not None
    assert (event.status, event.reason, event.role, event.seq, event.reserved_after_seq) == (
        "rejected",
        reason,
        "buyer",
        6,
        5,
    )


@pytest.mark.parametrize(
    ("buyer_account", "reason"),
    [
        (Account(seq=5, balances={QUOTE: Balance(9999, 0)}), "unknown_hold"),
        (holding(QUOTE, 5999, "buy-1"), "insufficient_hold"),
        (holding(BASE, 10_000, "buy-1"), "hold_asset_mismatch"),
        (holding(QUOTE, 10_000, "buy-1", expires_at_ms=TS), "hold_expired"),
    ],
)
def test_a_buyer_that_cannot_pay_is_refused_at_once(buyer_account: Account, reason: str) -> None:
    outcome = trading.reserve(buyer_account, trade(), TS)
    assert outcome.legs == ()
    event = outcome.event
    assert event is not None
    assert (event.status, event.reason, event.seq, event.reserved_after_seq) == ("rejected", reason, 6, None)
    assert outcome.account.balances == buyer_account.balances and outcome.account.holds == buyer_account.holds


def test_release_rest_closes_both_orders() -> None:
    b, s, *_ = run(trade(release_buyer=True, release_seller=True), buyer(), seller())
    assert b.holds == {} and b.balances[QUOTE] == Balance(4500, 0)
    assert s.holds == {} and s.balances[BASE] == Balance(2, 0)


def test_a_reservation_is_out_of_reach_of_release_capture_and_expiry() -> None:
    account = holding(QUOTE, 10_000, "buy-1", expires_at_ms=TS + 5)
    reserved = trading.reserve(account, trade(), TS).account
    unlock_all = apply_operation(reserved, Operation("u", "unlock", BUYER, QUOTE, None, hold_id="buy-1"), TS)
    assert unlock_all.event is not None and unlock_all.event.amount == 4000
    assert unlock_all.account.holds["buy-1"] == Hold(QUOTE, 6000, TS + 5, pending=6000)
    too_much = apply_operation(reserved, Operation("u", "unlock", BUYER, QUOTE, 4001, hold_id="buy-1"), TS)
    assert too_much.event is not None and too_much.event.reason == "insufficient_hold"
    nothing_left = apply_operation(
        unlock_all.account, Operation("u2", "unlock", BUYER, QUOTE, None, hold_id="buy-1"), TS
    )
    assert nothing_left.event is not None and nothing_left.event.reason == "insufficient_hold"
    capture = Operation("c", "transfer", BUYER, QUOTE, 4001, to_user_id=7, source="locked", hold_id="buy-1")
    refused = apply_operation(reserved, capture, TS)
    assert refused.event is not None and refused.event.reason == "insufficient_hold"
    expiry = Expiry(BUYER, "buy-1", TS + 5)
    assert apply_expiry(reserved, expiry) == (reserved, None, ())  # waits for the trade
    second = trading.reserve(reserved, replace(trade(), op_id="t-2", quote_amount=4001), TS)
    assert second.event is not None and second.event.reason == "insufficient_hold"


def test_a_trade_reserved_before_expiry_settles_after_it_and_expiry_follows() -> None:
    account = holding(QUOTE, 10_000, "buy-1", expires_at_ms=TS + 5)
    reserved = trading.reserve(account, trade(), TS)
    sold = trading.sell(seller(), reserved.legs[0])
    settled = trading.settle(reserved.account, sold.legs[0])
    assert settled.event is not None and settled.event.accepted
    expired = apply_expiry(settled.account, Expiry(BUYER, "buy-1", TS + 5))
    assert expired.event is not None and expired.event.amount == 4000
    assert expired.account.holds == {}


def body(**changes: Any) -> Dict[str, Any]:
    terms = trade().to_json()
    terms.update(changes)
    return {k: v for k, v in terms.items() if v is not Ellipsis}


def test_a_trade_reads_back_from_its_wire_form() -> None:
    assert parse_operation(body()) == trade()
    minimal = body(buyer_fee=..., seller_fee=..., fee_account=..., release_rest=...)
    assert parse_trade(minimal) == trade(buyer_fee=0, seller_fee=0, fee_account=None)
    assert parse_trade(body(base_amount="3", quote_amount="6000")) == trade()


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"seller": {"user_id": BUYER, "hold_id": "x"}}, "seller.user_id", "self_trade"),
        ({"user_id": 5}, "buyer.user_id", "buyer_is_not_user"),
        ({"quote_asset": BASE}, "quote_asset", "same_asset"),
        ({"buyer_fee": 4}, "buyer_fee", "fee_exceeds_amount"),
        ({"seller_fee": 6001}, "seller_fee", "fee_exceeds_amount"),
        ({"seller_fee": -1}, "seller_fee", "invalid_fee"),
        ({"buyer_fee": 0.5}, "buyer_fee", "invalid_fee"),
        ({"fee_account": None}, "fee_account", "missing_field"),
        ({"fee_account": BUYER}, "fee_account", "accounts_must_be_different"),
        ({"fee_account": "x"}, "fee_account", "invalid_fee_account"),
        ({"release_rest": {"buyer": 1}}, "release_rest", "invalid_release_rest"),
        ({"release_rest": {"maker": True}}, "release_rest", "invalid_release_rest"),
        ({"buyer": {"user_id": BUYER}}, "buyer", "invalid_buyer"),
        ({"seller": {"user_id": SELLER, "hold_id": "a b"}}, "seller.hold_id", "invalid_hold_id"),
        ({"seller": {"user_id": 0, "hold_id": "x"}}, "seller.user_id", "invalid_user_id"),
        ({"base_amount": 0}, "base_amount", "invalid_amount"),
        ({"quote_amount": ...}, "quote_amount", "missing_field"),
        ({"seller": ...}, "seller", "missing_field"),
        ({"asset": 1}, "asset", "unknown_field"),
    ],
)
def test_a_bad_trade_names_its_field(changes: Dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidOperation) as caught:
        parse_operation(body(**changes))
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_trade_legs_are_read_strictly() -> None:
    leg = TradeLeg("settle", trade(), TS, 5, "insufficient_hold")
    assert read_leg(json.dumps(leg.to_json()).encode()) == leg
    wire = leg.to_json()
    for bad in (
        {**wire, "leg": "trade_mint"},
        {**wire, "extra": 1},
        {**wire, "reserved_after_seq": -1},
        {**wire, "ts": "now"},
        {**wire, "trade": {**wire["trade"], "base_amount": 0}},
        {**TradeLeg("sell", trade(), TS, 5).to_json(), "reason": "no"},
        TradeLeg("fee", trade(buyer_fee=0, seller_fee=0, fee_account=None), TS, 5).to_json(),
    ):
        with pytest.raises(InvalidOperation):
            read_leg(json.dumps(bad).encode())


def test_trade_events_round_trip_and_are_read_strictly() -> None:
    *_, events = run(trade(), buyer(), seller())
    for event in events:
        wire = json.dumps(event.to_json()).encode()
        assert read_event(wire) == event
        assert Event.from_json(json.loads(wire)) == event
    wire = events[0].to_json()
    for name, value in (
        ("role", "maker"),
        ("changes", [{"asset": 1, "available": -1, "locked": 0}]),
        ("reserved_after_seq", -1),
        ("trade", {"op_id": "t"}),
    ):
        with pytest.raises(InvalidOperation):
            read_event(json.dumps({**wire, name: value}).encode())


def test_events_of_other_kinds_carry_no_trade_fields() -> None:
    event = apply_operation(Account(), Operation("d", "deposit", 1, 1, 5), TS).event
    assert event is not None
    assert "role" not in event.to_json() and "trade" not in event.to_json()


def test_a_buyer_without_room_for_the_base_is_refused_at_reserve() -> None:
    full = replace(buyer(), balances={**buyer().balances, BASE: Balance(MAX_BALANCE - 1, 0)})
    refused = trading.reserve(full, trade(), TS)
    assert refused.event is not None and refused.event.reason == "balance_overflow" and refused.legs == ()


def test_a_reservation_keeps_room_for_its_base_until_it_settles() -> None:
    near = replace(buyer(), balances={**buyer().balances, BASE: Balance(MAX_BALANCE - 10, 0)})
    reserved = trading.reserve(near, trade(), TS)  # 3 base less a fee of 1: 2 incoming
    assert reserved.account.incoming == {BASE: 2}
    deposit = Operation(op_id="d", kind="deposit", user_id=BUYER, asset=BASE, amount=9)
    assert apply_operation(reserved.account, deposit, TS).event.reason == "balance_overflow"
    account, _, _, _ = run(trade(), near, seller())
    assert account.incoming == {} and account.balance(BASE).available == MAX_BALANCE - 8
    (sell_leg,) = reserved.legs
    refused = trading.settle(reserved.account, replace(sell_leg, step="settle", reason="insufficient_hold"))
    assert refused.account.incoming == {}


def test_a_seller_without_room_for_the_quote_refuses_the_trade() -> None:
    full = replace(seller(), balances={**seller().balances, QUOTE: Balance(MAX_BALANCE - 100, 0)})
    (sell_leg,) = trading.reserve(buyer(), trade(), TS).legs
    refused = trading.sell(full, sell_leg)
    assert refused.event is None and refused.account == full
    (settle_leg,) = refused.legs
    assert (settle_leg.step, settle_leg.reason) == ("settle", "balance_overflow")


def test_fees_past_the_limit_are_parked_in_a_rejected_event() -> None:
    full = Account(seq=2, balances={QUOTE: Balance(MAX_BALANCE - 10, 0)})
    (sell_leg,) = trading.reserve(buyer(), trade(), TS).legs
    parked = trading.collect_fee(full, replace(sell_leg, step="fee"))
    assert parked.event is not None and (parked.event.status, parked.event.reason) == ("rejected", "balance_overflow")
    assert parked.account.balances == full.balances and parked.account.seq == 3
