"""Holds as rows of their own in the pure core: the totals the account keeps, the rows a decision writes, limits."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict, Optional

from app.core import trading
from app.core.hold_rows import HoldRow, HoldsLoaded, closed_hold, hold_row_key, hold_rows_prefix, load
from app.core.ledger import (
    MAX_ASSETS,
    MAX_BALANCE,
    Account,
    Balance,
    Hold,
    Origin,
    apply_credit,
    apply_expiry,
    apply_operation,
    is_parked,
)
from app.core.legs import Credit, Expiry
from app.core.models import Operation, Party, Trade

TS = 1_700_000_000_000
HERE = Origin("operations", 7)


def op(kind: str, amount: Optional[int], hold_id: Optional[str] = "h1", asset: int = 1, **extra: Any) -> Operation:
    return Operation(
        op_id=f"{kind}-{hold_id}", kind=kind, user_id=7, asset=asset, amount=amount, hold_id=hold_id, **extra
    )


def many_holds(count: int) -> Account:
    """An account with ``count`` holds of asset 1 (10 each), of which only ``loaded`` would be in a decision."""
    holds = {f"h{i:05d}": Hold(1, 10) for i in range(count)}
    return Account(seq=count + 1, balances={1: Balance(0, 10 * count)}, holds=holds)


def test_held_is_derived_from_all_holds_and_kept_by_every_change_of_one() -> None:
    account = Account(seq=1, balances={1: Balance(100, 0)})
    opened = apply_operation(account, op("lock", 60), TS).account
    assert (opened.held(1), opened.held_total) == (60, {1: 60})
    partly = apply_operation(opened, op("unlock", 20), TS).account
    assert partly.held(1) == 40
    # Only this hold loaded, as the agent loads it: the totals still count the others.
    others = replace(partly, holds={}, held_total={1: 40 + 500, 2: 7})
    loaded = replace(others, holds={"h1": partly.holds["h1"]})
    released = apply_operation(loaded, op("unlock", None), TS).account
    assert (released.holds, released.held_total) == ({}, {1: 500, 2: 7})


def test_expiry_and_trades_move_the_totals_too() -> None:
    account = Account(seq=1, balances={1: Balance(0, 60)}, holds={"h1": Hold(1, 60, TS + 5)})
    expired = apply_expiry(account, Expiry(7, "h1", TS + 5)).account
    assert (expired.holds, expired.held_total) == ({}, {})
    terms = Trade("t", Party(11, "b"), Party(22, "s"), 1, 2, 3, 6000, 0, 0, None, release_buyer=True)
    buyer = Account(seq=1, balances={2: Balance(0, 10_000)}, holds={"b": Hold(2, 10_000)})
    reserved = trading.reserve(buyer, terms, TS)
    assert reserved.account.held(2) == 10_000  # a reservation locks nothing more
    seller = Account(seq=1, balances={1: Balance(0, 5)}, holds={"s": Hold(1, 5)})
    sold = trading.sell(seller, reserved.legs[0])
    assert (sold.account.holds["s"].remaining, sold.account.held(1)) == (2, 2)
    settled = trading.settle(reserved.account, sold.legs[0])
    assert (settled.account.holds, settled.account.held_total) == ({}, {})  # filled, the rest released


def test_the_account_row_keeps_totals_and_no_holds_whatever_their_number() -> None:
    small, large = many_holds(10), many_holds(50_000)
    assert "holds" not in large.row_json()
    assert large.row_json()["held"] == {"1": 500_000}
    assert len(json.dumps(large.row_json())) - len(json.dumps(small.row_json())) == 9  # digits of seq and totals
    assert Account.from_json(large.to_json()) == large  # the form old rows had, read back


def test_a_row_written_before_holds_had_rows_derives_its_totals() -> None:
    old = {"seq": 3, "balances": {"1": {"available": 0, "locked": 70}}, "holds": {"a": {"asset": 1, "remaining": 70}}}
    loaded = load(old, (), lambda hold_id: None, lambda hold_id: False)
    assert loaded.carried and loaded.account.held(1) == 70 and loaded.account.holds == {"a": Hold(1, 70)}
    rows = loaded.rows_after(loaded.account, HERE)
    assert rows == [("a", HoldRow(Hold(1, 70), HERE))]  # every carried hold gets its row


def test_a_row_ahead_of_its_account_reads_as_what_it_replaced() -> None:
    account = Account(seq=2, applied={"operations": 6})
    row = HoldRow(Hold(1, 40), Origin("operations", 7), before=Hold(1, 60))
    assert row.seen_by(account) == Hold(1, 60)
    assert row.seen_by(account.mark(Origin("operations", 7))) == Hold(1, 40)
    assert HoldRow.from_json(json.loads(json.dumps(row.to_json()))) == row
    closed = HoldRow(None, Origin("credits", 3), before=Hold(1, 60))
    assert closed_hold(closed.to_json()) and not closed_hold(row.to_json()) and not closed_hold(None)
    assert HoldRow.from_json(closed.to_json()) == closed


def rows_for(account_row: Dict[str, Any], stored: Dict[str, Dict[str, Any]], fresh: frozenset = frozenset()) -> Any:
    return load(account_row, ["h1"], stored.get, lambda hold_id: hold_id in fresh)


def test_the_rows_a_decision_writes() -> None:
    account = Account(seq=1, balances={1: Balance(40, 60)}, held_total={1: 60}, applied={"operations": 5})
    clean = HoldRow(Hold(1, 60), Origin("operations", 5))
    loaded = rows_for(account.row_json(), {"h1": clean.to_json()})
    assert loaded.account.holds == {"h1": Hold(1, 60)}
    assert loaded.rows_after(loaded.account, HERE) == []  # nothing changed, nothing written
    partly = apply_operation(loaded.account, op("unlock", 20), TS).account
    assert loaded.rows_after(partly, HERE) == [("h1", HoldRow(Hold(1, 40), HERE, before=Hold(1, 60)))]
    closed = apply_operation(loaded.account, op("unlock", None), TS).account
    assert loaded.rows_after(closed, HERE) == [("h1", HoldRow(None, HERE, before=Hold(1, 60)))]


def test_a_row_this_batch_wrote_keeps_the_before_of_the_batch() -> None:
    """Two changes in one batch: the account row is written once, so the row must still read as the batch's start."""
    account = Account(seq=2, balances={1: Balance(60, 40)}, held_total={1: 40}, applied={"operations": 7})
    mine = HoldRow(Hold(1, 40), HERE, before=Hold(1, 60))
    loaded = rows_for(account.row_json(), {"h1": mine.to_json()}, frozenset({"h1"}))
    closed = apply_operation(loaded.account, op("unlock", None), TS).account
    later = Origin("operations", 8)
    assert loaded.rows_after(closed, later) == [("h1", HoldRow(None, later, before=Hold(1, 60)))]
    opened = HoldRow(Hold(1, 40), HERE)  # opened in this batch, closed in it too: nothing to keep
    loaded = rows_for(account.row_json(), {"h1": opened.to_json()}, frozenset({"h1"}))
    closed = apply_operation(loaded.account, op("unlock", None), TS).account
    assert loaded.rows_after(closed, later) == [("h1", None)]


def test_rows_a_crash_left_are_repaired_by_the_next_decision_naming_them() -> None:
    lost = Account(seq=1, balances={1: Balance(100, 0)}, applied={"operations": 6})
    ahead = HoldRow(Hold(1, 60), HERE)  # a lock whose account the crash lost
    loaded = rows_for(lost.row_json(), {"h1": ahead.to_json()})
    assert loaded.account.holds == {}
    refused = apply_operation(loaded.account, op("lock", 500), TS).account  # decided again: no funds this time
    assert loaded.rows_after(refused, HERE) == [("h1", None)]
    left = HoldRow(None, Origin("operations", 3), before=Hold(1, 60))  # closed, its deletion lost
    loaded = rows_for(lost.row_json(), {"h1": left.to_json()})
    assert loaded.account.holds == {} and loaded.rows_after(loaded.account, HERE) == [("h1", None)]


def test_keys_sort_by_hold_id_within_a_user() -> None:
    keys = sorted(hold_row_key(7, hold_id) for hold_id in ["b", "a", "a|b", "A"])
    assert keys == [b"7|A", b"7|a", b"7|a|b", b"7|b"]
    assert all(key.startswith(hold_rows_prefix(7)) for key in keys)
    assert not hold_row_key(77, "a").startswith(hold_rows_prefix(7))


def test_an_asset_more_than_the_limit_is_refused_where_it_can_be() -> None:
    account = Account(seq=1, balances={1: Balance(5, 0), 2: Balance(5, 0)})
    refused = apply_operation(account, op("deposit", 1, None, asset=3), TS, max_assets=2)
    assert refused.event is not None and refused.event.reason == "too_many_assets"
    assert refused.account.balances == account.balances
    assert apply_operation(account, op("deposit", 1, None, asset=2), TS, max_assets=2).event.accepted  # type: ignore[union-attr]
    credit = apply_credit(account, Credit(8, 7, "t", 3, 1, TS), max_assets=2)
    assert credit.event is not None and (credit.event.kind, credit.event.reason) == ("transfer_in", "too_many_assets")
    assert credit.legs == (Credit(8, 7, "t", 3, 1, TS).returned_to_payer(),)


def test_trades_keep_to_the_asset_limit() -> None:
    terms = Trade("t", Party(11, "b"), Party(22, "s"), 1, 2, 3, 6000, 1, 60, 99)
    buyer = Account(seq=1, balances={2: Balance(0, 10_000)}, holds={"b": Hold(2, 10_000)})
    refused = trading.reserve(buyer, terms, TS, max_assets=1)  # the base would be a second asset
    assert refused.event is not None and refused.event.reason == "too_many_assets"
    reserved = trading.reserve(buyer, terms, TS, max_assets=2)
    assert reserved.account.incoming == {1: 2}  # counted from the reservation on
    seller = Account(seq=1, balances={1: Balance(0, 5)}, holds={"s": Hold(1, 5)})
    (sell,) = reserved.legs
    assert trading.sell(seller, sell, max_assets=1).legs[0].reason == "too_many_assets"  # type: ignore[union-attr]
    fees = Account(seq=1, balances={7: Balance(1, 0)})
    parked = trading.collect_fee(fees, replace(sell, step="fee"), max_assets=2)
    assert parked.event is not None and parked.event.reason == "too_many_assets" and is_parked(parked.event)
    assert parked.account.balances == fees.balances


def test_an_account_row_at_the_asset_limit_fits_one_kafka_record() -> None:
    """What still grows per account is its assets: at the limit, with every amount at its largest, well under 1 MiB."""
    assets = range(2**31 - MAX_ASSETS, 2**31)
    full = Account(
        seq=2**63 - 1,
        balances={asset: Balance(MAX_BALANCE, MAX_BALANCE) for asset in assets},
        incoming={asset: MAX_BALANCE for asset in assets},
        held_total={asset: MAX_BALANCE for asset in assets},
        applied={"operations": 2**63 - 1, "credits": 2**63 - 1},
    )
    size = len(json.dumps(full.row_json(), separators=(",", ":")))
    assert size < 150 * MAX_ASSETS < 1024 * 1024
    assert not full.takes_assets([1], MAX_ASSETS) and full.takes_assets([2**31 - 1], MAX_ASSETS)


def test_loaded_is_what_a_decision_starts_from() -> None:
    assert load(None, ["x"], lambda hold_id: None, lambda hold_id: False) == HoldsLoaded(Account(), {"x": None})
