"""The asset registry's rules: registrations, decimal amounts to minor units, decimal forms."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from app.core.assets import Asset, parse_asset, to_minor_units
from app.core.models import MAX_AMOUNT, parse_operation
from app.errors import InvalidOperation

BTC, USD, WHOLE = Asset(1, "BTC", 8), Asset(2, "USD", 2), Asset(3, "SHARE", 0)
REGISTRY = {asset.asset: asset for asset in (BTC, USD, WHOLE)}


def lookup(asset_id: int) -> Optional[Asset]:
    return REGISTRY.get(asset_id)


def deposit(amount: Any, asset: int = 1) -> Dict[str, Any]:
    return {"op_id": "d", "kind": "deposit", "user_id": 7, "asset": asset, "amount": amount}


def test_a_registration_reads_back() -> None:
    assert parse_asset({"asset": 1, "code": "BTC", "scale": 8}) == BTC
    assert parse_asset(BTC.to_json()) == BTC


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"asset": 0, "code": "BTC", "scale": 8}, "asset", "invalid_asset"),
        ({"asset": 1, "code": "btc", "scale": 8}, "code", "invalid_code"),
        ({"asset": 1, "code": "", "scale": 8}, "code", "invalid_code"),
        ({"asset": 1, "code": "X" * 17, "scale": 8}, "code", "invalid_code"),
        ({"asset": 1, "code": "BTC", "scale": 19}, "scale", "invalid_scale"),
        ({"asset": 1, "code": "BTC", "scale": -1}, "scale", "invalid_scale"),
        ({"asset": 1, "code": "BTC", "scale": True}, "scale", "invalid_scale"),
        ({"asset": 1, "code": "BTC"}, "scale", "missing_field"),
        ({"asset": 1, "code": "BTC", "scale": 8, "name": "Bitcoin"}, "name", "unknown_field"),
    ],
)
def test_a_bad_registration_names_its_field(body: Dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidOperation) as caught:
        parse_asset(body)
    assert (caught.value.field, caught.value.reason) == (field, reason)


@pytest.mark.parametrize(
    ("amount", "asset", "minor"),
    [
        ("0.015", 1, 1_500_000),
        ("0.00000001", 1, 1),
        ("12.5", 2, 1250),
        ("12.50", 2, 1250),
        ("3.000", 3, 3),  # trailing zeros are no precision
        ("92233720368.54775807", 1, MAX_AMOUNT),
    ],
)
def test_decimals_become_minor_units(amount: str, asset: int, minor: int) -> None:
    operation = parse_operation(to_minor_units(deposit(amount, asset), lookup))
    assert operation.amount == minor  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("amount", "asset", "reason"),
    [
        ("0.000000001", 1, "invalid_precision"),
        ("1.005", 2, "invalid_precision"),
        ("0.5", 3, "invalid_precision"),
        ("92233720368.54775808", 1, "invalid_amount"),
        ("0.0", 1, "invalid_amount"),
        ("1.", 1, "invalid_amount"),
        (".5", 1, "invalid_amount"),
        ("-1.5", 1, "invalid_amount"),
        ("1.5e3", 1, "invalid_amount"),
        ("1.5", 9, "invalid_amount"),  # not registered
    ],
)
def test_bad_decimals_are_refused(amount: str, asset: int, reason: str) -> None:
    with pytest.raises(InvalidOperation) as caught:
        parse_operation(to_minor_units(deposit(amount, asset), lookup))
    assert (caught.value.field, caught.value.reason) == ("amount", reason)


def test_integers_and_digit_strings_keep_meaning_minor_units() -> None:
    assert to_minor_units(deposit(5), lookup) == deposit(5)
    assert to_minor_units(deposit("5"), lookup) == deposit("5")
    assert to_minor_units([1], lookup) == [1]


def test_a_trade_converts_each_amount_with_its_asset() -> None:
    body = {
        "op_id": "t",
        "kind": "trade",
        "user_id": 1,
        "buyer": {"user_id": 1, "hold_id": "b"},
        "seller": {"user_id": 2, "hold_id": "s"},
        "base_asset": 1,
        "quote_asset": 2,
        "base_amount": "0.5",
        "quote_amount": "20000.00",
        "buyer_fee": "0.0005",
        "seller_fee": "0.0",
        "fee_account": 9,
    }
    trade = parse_operation(to_minor_units(body, lookup))
    assert (trade.base_amount, trade.quote_amount, trade.buyer_fee, trade.seller_fee) == (  # type: ignore[union-attr]
        50_000_000,
        2_000_000,
        50_000,
        0,
    )


def test_decimal_forms_write_every_decimal() -> None:
    assert (BTC.decimal(1_500_000), USD.decimal(5), USD.decimal(123_456), WHOLE.decimal(42)) == (
        "0.01500000",
        "0.05",
        "1234.56",
        "42",
    )
