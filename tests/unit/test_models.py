"""Validation of client operations: every field, every reason code, no floats for money."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from app.core.models import MAX_AMOUNT, Event, Operation, identify, parse_operation, read_event, users_named
from app.core.wire import decode_json
from app.errors import InvalidOperation


def body(**overrides: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {"op_id": "op-1", "kind": "deposit", "user_id": 1001, "asset": 1, "amount": 500}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def rejection(raw: Any) -> InvalidOperation:
    with pytest.raises(InvalidOperation) as caught:
        parse_operation(raw)
    return caught.value


def test_deposit_parses_into_operation() -> None:
    assert parse_operation(body()) == Operation(op_id="op-1", kind="deposit", user_id=1001, asset=1, amount=500)


def test_amount_as_digit_string_is_exact_beyond_float_precision() -> None:
    assert parse_operation(body(amount="9007199254740993")).amount == 9007199254740993


def test_transfer_defaults_to_available_source() -> None:
    op = parse_operation(body(kind="transfer", to_user_id=2002))
    assert (op.to_user_id, op.source) == (2002, "available")


def test_transfer_from_locked() -> None:
    assert parse_operation(body(kind="transfer", to_user_id=2002, source="locked")).source == "locked"


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"amount": 1.5}, "amount", "invalid_amount"),
        ({"amount": 100.0}, "amount", "invalid_amount"),
        ({"amount": 0}, "amount", "invalid_amount"),
        ({"amount": -5}, "amount", "invalid_amount"),
        ({"amount": True}, "amount", "invalid_amount"),
        ({"amount": "12a"}, "amount", "invalid_amount"),
        ({"amount": "-1"}, "amount", "invalid_amount"),
        ({"amount": ""}, "amount", "invalid_amount"),
        ({"amount": MAX_AMOUNT + 1}, "amount", "invalid_amount"),
        ({"amount": str(MAX_AMOUNT + 1)}, "amount", "invalid_amount"),
        ({"amount": None}, "amount", "invalid_amount"),
        ({"amount": ...}, "amount", "missing_field"),
        ({"kind": "mint"}, "kind", "unknown_kind"),
        ({"kind": ...}, "kind", "missing_field"),
        ({"user_id": 0}, "user_id", "invalid_user_id"),
        ({"user_id": 2**63}, "user_id", "invalid_user_id"),
        ({"user_id": "1001"}, "user_id", "invalid_user_id"),
        ({"user_id": True}, "user_id", "invalid_user_id"),
        ({"user_id": ...}, "user_id", "missing_field"),
        ({"asset": 0}, "asset", "invalid_asset"),
        ({"asset": 2**31}, "asset", "invalid_asset"),
        ({"asset": "BTC"}, "asset", "invalid_asset"),
        ({"op_id": ""}, "op_id", "invalid_op_id"),
        ({"op_id": "x" * 65}, "op_id", "invalid_op_id"),
        ({"op_id": "has space"}, "op_id", "invalid_op_id"),
        ({"op_id": 7}, "op_id", "invalid_op_id"),
        ({"op_id": ...}, "op_id", "missing_field"),
        ({"to_user_id": 5}, "to_user_id", "unknown_field"),
        ({"ammount": 5}, "ammount", "unknown_field"),
    ],
)
def test_invalid_field_is_named(overrides: Dict[str, Any], field: str, reason: str) -> None:
    error = rejection(body(**overrides))
    assert (error.field, error.reason) == (field, reason)


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({}, "to_user_id", "missing_field"),
        ({"to_user_id": 1001}, "to_user_id", "accounts_must_be_different"),
        ({"to_user_id": -1}, "to_user_id", "invalid_to_user_id"),
        ({"to_user_id": 2002, "source": "pending"}, "source", "invalid_source"),
    ],
)
def test_invalid_transfer_field_is_named(overrides: Dict[str, Any], field: str, reason: str) -> None:
    error = rejection(body(kind="transfer", **overrides))
    assert (error.field, error.reason) == (field, reason)


def test_body_must_be_an_object() -> None:
    assert rejection([1, 2]).reason == "invalid_body"


def test_decode_json_rejects_garbage() -> None:
    with pytest.raises(InvalidOperation) as caught:
        decode_json(b"\xff{not json")
    assert caught.value.reason == "invalid_json"


def test_identify_ties_invalid_operation_to_user() -> None:
    assert identify(body(amount=-1)) == (1001, "op-1")
    assert identify(body(user_id="x")) is None
    assert identify("not an object") is None


def test_error_dict_names_field_and_reason() -> None:
    assert rejection(body(amount=1.5)).as_dict()["field"] == "amount"


def _event(**overrides: Any) -> bytes:
    event = Event("op-1", "deposit", 1001, 1, 5, "accepted", None, 5, 0, 1, 1_700_000_000_000)
    return json.dumps({**event.to_json(), **overrides}).encode()


def test_event_the_ledger_writes_is_read_back() -> None:
    assert read_event(_event()).seq == 1
    assert read_event(_event(available=10**30, kind="transfer_in", counterparty=7)).available == 10**30


@pytest.mark.parametrize(
    "overrides",
    [
        {"ts": 10**20},
        {"ts": -1},
        {"seq": 0},
        {"seq": 2**63},
        {"user_id": "1001"},
        {"asset": 2**31},
        {"amount": -1},
        {"available": -5},
        {"locked": 1.5},
        {"op_id": "has space"},
        {"kind": "mint"},
        {"status": "maybe"},
        {"reason": "x" * 65},
        {"counterparty": True},
    ],
)
def test_event_no_ledger_could_write_is_refused(overrides: Dict[str, Any]) -> None:
    with pytest.raises(InvalidOperation) as caught:
        read_event(_event(**overrides))
    assert caught.value.reason == "invalid_event"


@pytest.mark.parametrize("raw", [None, b"", b"[]", b'{"seq": 1}', b'{"ts": ' + b"9" * 5000 + b"}", b"\xff"])
def test_event_that_is_not_one_is_refused(raw: Any) -> None:
    with pytest.raises(InvalidOperation):
        read_event(raw)


TRADE = {
    "op_id": "fill-1",
    "kind": "trade",
    "user_id": 2001,
    "buyer": {"user_id": 2001, "hold_id": "bid-1"},
    "seller": {"user_id": 3001, "hold_id": "ask-7"},
    "base_asset": 1,
    "quote_asset": 2,
    "base_amount": 20,
    "quote_amount": 400,
}


@pytest.mark.parametrize(
    "raw, users",
    [
        (body(), (1001,)),
        (body(kind="lock", hold_id="h"), (1001,)),
        (body(kind="transfer", to_user_id=2002), (1001, 2002)),
        (body(kind="transfer", to_user_id=2002, source="locked", hold_id="h"), (1001, 2002)),
        (TRADE, (2001, 3001)),
        ({**TRADE, "buyer_fee": 1, "fee_account": 9000}, (2001, 3001, 9000)),
    ],
)
def test_every_user_an_operation_moves_money_for_is_named(raw: Dict[str, Any], users: tuple) -> None:
    """Who may submit an operation must be allowed each of them (app.web.operations)."""
    assert users_named(parse_operation(raw)) == users
