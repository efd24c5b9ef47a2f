"""The verifier on trades and holds: a reservation placed where the buyer's event says, half trades found."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from app.core import trading
from app.core.ledger import Account, apply_expiry, apply_operation
from app.core.legs import Expiry
from app.core.models import Operation, Trade, parse_operation
from app.core.verification import check

LIMIT = 64 * 1024
TS = 1_700_000_000_000
BUYER, SELLER, FEES = 1, 2, 9

TRADE = {
    "op_id": "t",
    "kind": "trade",
    "user_id": BUYER,
    "buyer": {"user_id": BUYER, "hold_id": "buy"},
    "seller": {"user_id": SELLER, "hold_id": "sell"},
    "base_asset": 1,
    "quote_asset": 2,
    "base_amount": 3,
    "quote_amount": 6000,
    "buyer_fee": 1,
    "seller_fee": 60,
    "fee_account": FEES,
}
SETUP = [
    {"op_id": "a", "kind": "deposit", "user_id": BUYER, "asset": 2, "amount": 10_000},
    {"op_id": "b", "kind": "lock", "user_id": BUYER, "asset": 2, "amount": 10_000, "hold_id": "buy"},
    {"op_id": "c", "kind": "deposit", "user_id": SELLER, "asset": 1, "amount": 5},
    {
        "op_id": "d",
        "kind": "lock",
        "user_id": SELLER,
        "asset": 1,
        "amount": 5,
        "hold_id": "sell",
        "expires_at_ms": TS + 9,
    },
]
CANCEL = {"op_id": "e", "kind": "unlock", "user_id": BUYER, "asset": 2, "hold_id": "buy"}


def run() -> Tuple[List[Tuple[Optional[bytes], bytes]], List[Dict[str, Any]], Dict[int, Any]]:
    """Setup, the trade reserved, the buyer's cancel while it is pending, then the chain and the seller's expiry."""
    accounts: Dict[int, Account] = {}
    events: List[Dict[str, Any]] = []

    def apply(body: Dict[str, Any]) -> None:
        operation = parse_operation(body)
        assert isinstance(operation, Operation)
        outcome = apply_operation(accounts.get(operation.user_id, Account()), operation, TS)
        accounts[operation.user_id] = outcome.account
        assert outcome.event is not None
        events.append(outcome.event.to_json())

    for body in SETUP:
        apply(body)
    trade = parse_operation(TRADE)
    assert isinstance(trade, Trade)
    reserved = trading.reserve(accounts[BUYER], trade, TS)
    accounts[BUYER] = reserved.account
    apply(CANCEL)  # releases only what the trade did not reserve
    sold = trading.sell(accounts[SELLER], reserved.legs[0])
    accounts[SELLER] = sold.account
    settle, fee = sold.legs
    settled = trading.settle(accounts[BUYER], settle)
    accounts[BUYER] = settled.account
    collected = trading.collect_fee(Account(), fee)
    accounts[FEES] = collected.account
    expired = apply_expiry(accounts[SELLER], Expiry(SELLER, "sell", TS + 9))
    accounts[SELLER] = expired.account
    for outcome in (sold, settled, collected, expired):
        assert outcome.event is not None
        events.append(outcome.event.to_json())
    operations = [(str(b["user_id"]).encode(), json.dumps(b).encode()) for b in [*SETUP, TRADE, CANCEL]]
    return operations, events, {user: account.to_json() for user, account in accounts.items()}


def test_a_settled_trade_with_a_cancel_during_its_reservation_passes() -> None:
    operations, events, tables = run()
    report = check(operations, events, tables, max_operation_bytes=LIMIT)
    assert report.ok, report.summary()
    assert report.counts["trades_settled"] == 1
    cancel = next(e for e in events if e["op_id"] == "e")
    assert cancel["amount"] == 4000


def test_a_trade_without_its_seller_event_is_half_applied() -> None:
    operations, events, tables = run()
    events = [e for e in events if e.get("role") != "seller"]
    report = check(operations, events, max_operation_bytes=LIMIT)
    assert "trade_half_applied" in report.violations


def test_a_reservation_placed_elsewhere_than_it_happened_is_a_mismatch() -> None:
    operations, events, tables = run()
    buyer = next(e for e in events if e.get("role") == "buyer")
    buyer["reserved_after_seq"] = 3  # after the cancel, which then released everything
    report = check(operations, events, max_operation_bytes=LIMIT)
    assert "reference_mismatch" in report.violations


def test_holds_in_the_tables_are_compared() -> None:
    operations, events, tables = run()
    assert "holds" not in tables[BUYER]  # the order was filled and cancelled: its hold is closed
    tables[BUYER] = {**tables[BUYER], "holds": {"buy": {"asset": 2, "remaining": 1}}}
    report = check(operations, events, tables, max_operation_bytes=LIMIT)
    assert "table_mismatch" in report.violations


def test_a_hold_id_used_twice_must_be_refused() -> None:
    operations, events, tables = run()
    again = {"op_id": "f", "kind": "lock", "user_id": SELLER, "asset": 1, "amount": 1, "hold_id": "sell"}
    operations.append((b"2", json.dumps(again).encode()))
    seller_seq = max(e["seq"] for e in events if e["user_id"] == SELLER)
    accepted = {**events[2], "op_id": "f", "amount": 1, "seq": seller_seq + 1, "available": 1, "locked": 1}
    report = check(operations, [*events, accepted], max_operation_bytes=LIMIT)
    assert "reference_mismatch" in report.violations
