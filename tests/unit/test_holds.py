"""Holds in the pure core: open by name, release, capture, expire; anonymous locked funds stay apart."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from app.core.ledger import (
    Account,
    Balance,
    Hold,
    Origin,
    StoredResult,
    apply_expiry,
    apply_operation,
    expiry_key,
    hold_key,
    operation_key,
)
from app.core.legs import Credit, Expiry, read_leg
from app.core.models import Operation, parse_operation
from app.errors import InvalidOperation

TS = 1_700_000_000_000


def op(kind: str, amount: Optional[int], hold_id: Optional[str] = "h1", **extra: Any) -> Operation:
    return Operation(op_id=f"{kind}-{hold_id}", kind=kind, user_id=7, asset=1, amount=amount, hold_id=hold_id, **extra)


def funded(available: int = 100) -> Account:
    return Account(seq=1, balances={1: Balance(available, 0)})


def locked(amount: int = 60, expires_at_ms: Optional[int] = None) -> Account:
    outcome = apply_operation(funded(), op("lock", amount, expires_at_ms=expires_at_ms), TS)
    assert outcome.event is not None and outcome.event.accepted
    return outcome.account


def test_a_lock_with_a_hold_id_opens_the_hold() -> None:
    account = locked(60, expires_at_ms=TS + 5000)
    assert account.balance(1) == Balance(40, 60)
    assert account.holds == {"h1": Hold(asset=1, remaining=60, expires_at_ms=TS + 5000)}
    assert Account.from_json(account.to_json()) == account


def test_the_event_names_the_hold() -> None:
    outcome = apply_operation(funded(), op("lock", 10), TS)
    assert outcome.event is not None
    assert (outcome.event.hold_id, outcome.event.to_json()["hold_id"]) == ("h1", "h1")


def test_a_hold_id_opens_one_hold() -> None:
    again = apply_operation(locked(), op("lock", 1), TS)
    assert again.event is not None and again.event.reason == "hold_exists"
    assert again.account.balance(1) == Balance(40, 60)
    used = apply_operation(funded(), op("lock", 1), TS, hold_used=True)  # closed, but its id was used
    assert used.event is not None and used.event.reason == "hold_exists"
    assert used.account.holds == {}


def test_a_lock_that_has_expired_on_arrival_is_refused() -> None:
    outcome = apply_operation(funded(), op("lock", 10, expires_at_ms=TS), TS)
    assert outcome.event is not None and outcome.event.reason == "hold_expired"


def test_a_lock_without_the_funds_opens_nothing() -> None:
    outcome = apply_operation(funded(5), op("lock", 10), TS)
    assert outcome.event is not None and outcome.event.reason == "insufficient_funds"
    assert outcome.account.holds == {}


def test_unlock_without_amount_releases_all_that_remains_and_closes_the_hold() -> None:
    outcome = apply_operation(locked(60), op("unlock", None), TS)
    assert outcome.event is not None
    assert (outcome.event.status, outcome.event.amount) == ("accepted", 60)
    assert outcome.account.balance(1) == Balance(100, 0)
    assert outcome.account.holds == {}


def test_unlock_of_part_keeps_the_rest_held() -> None:
    outcome = apply_operation(locked(60), op("unlock", 25), TS)
    assert outcome.account.holds["h1"].remaining == 35
    assert outcome.account.balance(1) == Balance(65, 35)


def test_unlock_of_more_than_remains_is_refused() -> None:
    outcome = apply_operation(locked(60), op("unlock", 61), TS)
    assert outcome.event is not None and outcome.event.reason == "insufficient_hold"
    assert outcome.account.balance(1) == Balance(40, 60)


@pytest.mark.parametrize("kind", ["unlock", "transfer"])
def test_an_unknown_hold_is_refused(kind: str) -> None:
    extra = {"to_user_id": 9, "source": "locked"} if kind == "transfer" else {}
    outcome = apply_operation(locked(), op(kind, 5, hold_id="other", **extra), TS)
    assert outcome.event is not None and outcome.event.reason == "unknown_hold"


def test_a_hold_of_another_asset_is_refused() -> None:
    wrong = Operation(op_id="u", kind="unlock", user_id=7, asset=2, amount=5, hold_id="h1")
    outcome = apply_operation(locked(), wrong, TS)
    assert outcome.event is not None and outcome.event.reason == "hold_asset_mismatch"


def test_a_transfer_captures_from_the_hold_and_credits_the_payee() -> None:
    outcome = apply_operation(locked(60), op("transfer", 20, to_user_id=9, source="locked"), TS)
    assert outcome.account.balance(1) == Balance(40, 40)
    assert outcome.account.holds["h1"].remaining == 40
    assert outcome.legs == (Credit(payer=7, payee=9, op_id="transfer-h1", asset=1, amount=20, ts=TS),)
    whole = apply_operation(outcome.account, op("transfer", 40, to_user_id=9, source="locked"), TS)
    assert whole.account.holds == {} and whole.account.balance(1) == Balance(40, 0)


def test_an_expired_hold_cannot_be_captured_but_can_be_released() -> None:
    account = locked(60, expires_at_ms=TS + 10)
    capture = apply_operation(account, op("transfer", 5, to_user_id=9, source="locked"), TS + 10)
    assert capture.event is not None and capture.event.reason == "hold_expired"
    assert capture.legs == ()
    release = apply_operation(account, op("unlock", None), TS + 10)
    assert release.event is not None and release.event.accepted


def test_anonymous_unlock_and_transfer_reach_only_what_no_hold_locks() -> None:
    account = apply_operation(locked(60), Operation("a", "lock", 7, 1, 10), TS).account  # 10 locked without a hold
    assert account.balance(1) == Balance(30, 70)
    for anonymous in (Operation("u", "unlock", 7, 1, 11), Operation("t", "transfer", 7, 1, 11, 9, "locked")):
        refused = apply_operation(account, anonymous, TS)
        assert refused.event is not None and refused.event.reason == "insufficient_funds"
    allowed = apply_operation(account, Operation("u", "unlock", 7, 1, 10), TS)
    assert allowed.account.balance(1) == Balance(40, 60)
    assert allowed.account.holds == account.holds


def test_expiry_releases_what_remains_once() -> None:
    account = apply_operation(locked(60, expires_at_ms=TS + 100), op("unlock", 10), TS).account
    expiry = Expiry(user_id=7, hold_id="h1", expires_at_ms=TS + 100)
    outcome = apply_expiry(account, expiry)
    event = outcome.event
    assert event is not None
    assert (event.kind, event.op_id, event.hold_id, event.amount, event.ts) == (
        "hold_expired",
        "h1",
        "h1",
        50,
        TS + 100,
    )
    assert (event.seq, event.available, event.locked) == (account.seq + 1, 100, 0)
    assert outcome.account.holds == {}
    assert apply_expiry(outcome.account, expiry) == (outcome.account, None, ())


def test_expiry_of_a_closed_or_other_hold_changes_nothing() -> None:
    closed = apply_operation(locked(60, expires_at_ms=TS + 100), op("unlock", None), TS).account
    assert apply_expiry(closed, Expiry(7, "h1", TS + 100)).event is None
    open_ = locked(60, expires_at_ms=TS + 100)
    assert apply_expiry(open_, Expiry(7, "h1", TS + 99)) == (open_, None, ())


def test_result_keys_of_holds_and_expiries_cannot_collide_with_operations() -> None:
    keys = {operation_key(7, "h1"), hold_key(7, "h1"), expiry_key(Expiry(7, "h1", TS))}
    assert len(keys) == 3


def test_stored_results_keep_their_legs_and_read_old_rows() -> None:
    credit = Credit(7, 9, "t", 1, 5, TS)
    outcome = apply_operation(locked(), op("transfer", 5, to_user_id=9, source="locked"), TS)
    assert outcome.event is not None
    stored = StoredResult(outcome.event, Origin("operations", 3), outcome.legs)
    assert StoredResult.from_json(stored.to_json()) == stored
    old_row = {"event": outcome.event.to_json(), "source": ["operations", 3]}  # before legs were stored
    assert StoredResult.from_json(old_row) == stored
    assert StoredResult.from_json({"event": None, "source": ["credits", 1]}) == StoredResult(None, Origin("credits", 1))
    assert credit.to_json()["payer"] == 7


def body(**fields: Any) -> dict:
    return {"op_id": "o", "user_id": 7, "asset": 1, **fields}


def test_parse_hold_fields() -> None:
    lock = parse_operation(body(kind="lock", amount=5, hold_id="order-1", expires_at_ms=TS))
    assert (lock.hold_id, lock.expires_at_ms) == ("order-1", TS)
    unlock_all = parse_operation(body(kind="unlock", hold_id="order-1"))
    assert unlock_all.amount is None
    capture = parse_operation(body(kind="transfer", amount=5, to_user_id=9, source="locked", hold_id="order-1"))
    assert capture.hold_id == "order-1"
    assert parse_operation(lock.to_json()) == lock
    assert parse_operation(unlock_all.to_json()) == unlock_all


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"kind": "lock", "amount": 5, "hold_id": ""}, "hold_id", "invalid_hold_id"),
        ({"kind": "lock", "amount": 5, "hold_id": "a b"}, "hold_id", "invalid_hold_id"),
        ({"kind": "lock", "amount": 5, "hold_id": "x" * 65}, "hold_id", "invalid_hold_id"),
        ({"kind": "lock", "amount": 5, "hold_id": 12}, "hold_id", "invalid_hold_id"),
        ({"kind": "lock", "amount": 5, "expires_at_ms": TS}, "hold_id", "missing_field"),
        ({"kind": "lock", "amount": 5, "hold_id": "h", "expires_at_ms": 1.5}, "expires_at_ms", "invalid_expires_at_ms"),
        (
            {"kind": "lock", "amount": 5, "hold_id": "h", "expires_at_ms": 10**16},
            "expires_at_ms",
            "invalid_expires_at_ms",
        ),  # noqa: E501
        ({"kind": "lock", "hold_id": "h"}, "amount", "missing_field"),
        ({"kind": "unlock", "amount": 5}, "unlock", None),
        ({"kind": "unlock", "hold_id": "h", "expires_at_ms": TS}, "expires_at_ms", "unknown_field"),
        ({"kind": "deposit", "amount": 5, "hold_id": "h"}, "hold_id", "unknown_field"),
        ({"kind": "withdraw", "amount": 5, "hold_id": "h"}, "hold_id", "unknown_field"),
        ({"kind": "transfer", "amount": 5, "to_user_id": 9, "hold_id": "h"}, "source", "invalid_source"),
        ({"kind": "transfer", "to_user_id": 9, "source": "locked", "hold_id": "h"}, "amount", "missing_field"),
    ],
)
def test_bad_hold_fields_name_the_field(fields: dict, field: str, reason: Optional[str]) -> None:
    if reason is None:  # valid: an anonymous unlock still needs its amount only
        parse_operation(body(**fields))
        return
    with pytest.raises(InvalidOperation) as caught:
        parse_operation(body(**fields))
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_expiry_legs_are_read_strictly() -> None:
    leg = Expiry(7, "h1", TS)
    assert read_leg(json.dumps(leg.to_json()).encode()) == leg
    for bad in (
        {**leg.to_json(), "extra": 1},
        {**leg.to_json(), "user_id": 0},
        {**leg.to_json(), "hold_id": ""},
        {**leg.to_json(), "expires_at_ms": "soon"},
        {**leg.to_json(), "leg": "mint"},
    ):
        with pytest.raises(InvalidOperation):
            read_leg(json.dumps(bad).encode())
