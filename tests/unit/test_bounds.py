"""The numeric bounds are the database's, pinned to literal values rather than to the constants.

Tests written as ``MAX_AMOUNT + 1`` move with the constant: had it become 2**63, an
amount the CQL ``bigint`` column cannot hold would parse and fail only in the sink,
long after the client was answered. These use the literal limits of the columns.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest

from app.core.models import parse_operation
from app.errors import InvalidOperation

BIGINT_MAX = 9_223_372_036_854_775_807  # CQL bigint: signed 64-bit
INT_MAX = 2_147_483_647  # CQL int: signed 32-bit


def deposit(**fields: Any) -> Dict[str, Any]:
    return {"op_id": "b", "kind": "deposit", "user_id": 1, "asset": 1, "amount": 1, **fields}


@pytest.mark.parametrize("amount", [BIGINT_MAX, str(BIGINT_MAX)])
def test_the_largest_bigint_is_a_valid_amount(amount: Any) -> None:
    assert parse_operation(deposit(amount=amount)).amount == BIGINT_MAX


@pytest.mark.parametrize("amount", [BIGINT_MAX + 1, str(BIGINT_MAX + 1), 2**64 - 1])
def test_an_amount_beyond_a_bigint_is_refused(amount: Any) -> None:
    with pytest.raises(InvalidOperation) as caught:
        parse_operation(deposit(amount=amount))
    assert (caught.value.field, caught.value.reason) == ("amount", "invalid_amount")


def test_ids_are_bounded_by_their_columns() -> None:
    assert parse_operation(deposit(user_id=BIGINT_MAX, asset=INT_MAX)).user_id == BIGINT_MAX
    for field, value in (("user_id", BIGINT_MAX + 1), ("asset", INT_MAX + 1)):
        with pytest.raises(InvalidOperation) as caught:
            parse_operation(deposit(**{field: value}))
        assert caught.value.field == field
