"""The rules for the fields every client message shares: ids, asset ids, amounts, timestamps.

Commands and trades read their bodies with these checks, events are read back against the
same limits, and the gateway checks ids in URL paths with them too, so one value is judged
the same everywhere. Money is an ``int`` in minor units from the wire to the database; a
float is refused even when it happens to be whole, because its digits past 2**53 are not the
client's. Most limits are what the CQL columns the values end in can hold.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from app.core.wire import show, whole_number
from app.errors import InvalidOperation

MAX_ID = 2**63 - 1  # user ids: positive, below 2**63
MAX_ASSET = 2**31 - 1  # asset ids fit a CQL int
MAX_AMOUNT = 2**63 - 1  # one operation's amount fits a CQL bigint (signed 64-bit)
MAX_OP_ID_CHARS = 64
#: The last millisecond a CQL timestamp (and Python's datetime) can hold: 9999-12-31T23:59:59.999Z.
MAX_TS = 253_402_300_799_999


def check_op_id(value: Any) -> str:
    """The op_id rule, for bodies and URL paths alike: 1-64 printable ASCII characters, no spaces.

    Printable ASCII without spaces is safe in keys, logs, URLs and CQL text alike.
    """
    return _printable_id(value, "op_id")


def check_hold_id(value: Any) -> str:
    """The hold_id rule: the op_id rule (a hold id sits in table keys and URLs the same way)."""
    return _printable_id(value, "hold_id")


def _printable_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_OP_ID_CHARS:
        raise InvalidOperation(name, f"invalid_{name}", f"{name} must be a string of 1-{MAX_OP_ID_CHARS} characters")
    if not all("!" <= ch <= "~" for ch in value):
        raise InvalidOperation(name, f"invalid_{name}", f"{name} may hold printable ASCII characters only, no spaces")
    return value


def _op_id(body: Mapping[str, Any]) -> str:
    if "op_id" not in body:
        raise InvalidOperation("op_id", "missing_field", "op_id is required")
    return check_op_id(body["op_id"])


def _positive_int(body: Mapping[str, Any], name: str, maximum: int, reason: str) -> int:
    if name not in body:
        raise InvalidOperation(name, "missing_field", f"{name} is required")
    value = whole_number(body[name], maximum)
    if value is None:
        raise InvalidOperation(
            name, reason, f"{name} must be a JSON integer between 1 and {maximum}, got {show(body[name])}"
        )
    return value


def _amount(body: Mapping[str, Any], optional: bool = False, name: str = "amount") -> Optional[int]:
    if name not in body and optional:
        return None
    if name not in body:
        raise InvalidOperation(name, "missing_field", f"{name} is required")
    value = whole_number(body[name], MAX_AMOUNT, digits_allowed=True)
    if value is None:
        raise InvalidOperation(
            name,
            "invalid_amount",
            f"{name} must be an integer in minor units between 1 and {MAX_AMOUNT} (a JSON integer or a string"
            f" of 1-19 ASCII digits), got {show(body[name])}",
        )
    return value


def _required_amount(body: Mapping[str, Any], name: str) -> int:
    value = _amount(body, name=name)
    assert value is not None  # not optional: missing raised
    return value
