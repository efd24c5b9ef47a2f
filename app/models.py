"""What travels on the topics: operations in, events out, credit legs between partitions.

Everything here is pure: JSON-compatible dicts in, frozen dataclasses out, and an
``InvalidOperation`` naming the field when input cannot be an operation. Money is
an ``int`` in minor units from the wire to the database; a float is refused even
when it happens to be whole, because its digits past 2**53 are not the client's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from app.errors import InvalidOperation

KINDS = ("deposit", "withdraw", "lock", "unlock", "transfer")
SOURCES = ("available", "locked")
MAX_ID = 2**63 - 1  # user ids: positive, below 2**63
MAX_ASSET = 2**31 - 1  # asset ids fit a CQL int
MAX_AMOUNT = 2**63 - 1  # one operation's amount fits a CQL bigint (signed 64-bit)
MAX_OP_ID_CHARS = 64

_COMMON_FIELDS = ("op_id", "kind", "user_id", "asset", "amount")
_TRANSFER_FIELDS = ("to_user_id", "source")


@dataclass(frozen=True)
class Operation:
    """A validated client operation; ``to_user_id`` and ``source`` matter only for transfers."""

    op_id: str
    kind: str
    user_id: int
    asset: int
    amount: int
    to_user_id: Optional[int] = None
    source: str = "available"

    def to_json(self) -> Dict[str, Any]:
        """The wire form, as a client would send it."""
        body: Dict[str, Any] = {
            "op_id": self.op_id,
            "kind": self.kind,
            "user_id": self.user_id,
            "asset": self.asset,
            "amount": self.amount,
        }
        if self.kind == "transfer":
            body["to_user_id"] = self.to_user_id
            body["source"] = self.source
        return body


@dataclass(frozen=True)
class Credit:
    """The credit leg of an accepted transfer, applied on the payee's partition.

    It travels on an internal topic and is never parsed from client input, so no
    outside message can mint one.
    """

    payer: int
    payee: int
    op_id: str
    asset: int
    amount: int
    ts: int

    def to_json(self) -> Dict[str, Any]:
        """Wire form on the credits topic."""
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Credit":
        """Rebuild a credit we produced ourselves; a malformed one is a bug, so it raises."""
        return cls(
            payer=int(body["payer"]),
            payee=int(body["payee"]),
            op_id=str(body["op_id"]),
            asset=int(body["asset"]),
            amount=int(body["amount"]),
            ts=int(body["ts"]),
        )


@dataclass(frozen=True)
class Event:
    """The one result of one operation (or of a credit leg), as published on balance.events."""

    op_id: str
    kind: str
    user_id: int
    asset: Optional[int]
    amount: Optional[int]
    status: str
    reason: Optional[str]
    available: Optional[int]
    locked: Optional[int]
    seq: int
    ts: int
    counterparty: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        """Wire form; every field is always present (null where it does not apply)."""
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Event":
        """Rebuild an event read back from a table, a topic or the database."""
        return cls(**{name: body.get(name) for name in cls.__dataclass_fields__})

    @property
    def accepted(self) -> bool:
        """True when the operation changed balances."""
        return self.status == "accepted"


def decode_json(raw: bytes) -> Any:
    """Parse a message body; anything that is not UTF-8 JSON is an InvalidOperation."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidOperation(None, "invalid_json", f"body is not valid JSON: {exc}") from None


def _positive_int(body: Mapping[str, Any], name: str, maximum: int, reason: str) -> int:
    if name not in body:
        raise InvalidOperation(name, "missing_field", f"{name} is required")
    value = body[name]
    # bool is an int subclass in Python: true must not become user 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOperation(name, reason, f"{name} must be a JSON integer, got {_show(value)}")
    if not 0 < value <= maximum:
        raise InvalidOperation(name, reason, f"{name} must be between 1 and {maximum}, got {value}")
    return value


def _amount(body: Mapping[str, Any]) -> int:
    if "amount" not in body:
        raise InvalidOperation("amount", "missing_field", "amount is required")
    value = body["amount"]
    if isinstance(value, str):
        # A string of ASCII digits carries integers that JSON parsers in other languages round.
        if not (0 < len(value) <= 19 and value.isascii() and value.isdigit()):
            raise InvalidOperation(
                "amount", "invalid_amount", f"amount string must be 1-19 ASCII digits, got {_show(value)}"
            )
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOperation(
            "amount", "invalid_amount", f"amount must be an integer in minor units, got {_show(value)}"
        )
    if not 0 < value <= MAX_AMOUNT:
        raise InvalidOperation("amount", "invalid_amount", f"amount must be between 1 and {MAX_AMOUNT}, got {value}")
    return value


def _op_id(body: Mapping[str, Any]) -> str:
    if "op_id" not in body:
        raise InvalidOperation("op_id", "missing_field", "op_id is required")
    value = body["op_id"]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_OP_ID_CHARS:
        raise InvalidOperation("op_id", "invalid_op_id", f"op_id must be a string of 1-{MAX_OP_ID_CHARS} characters")
    # Printable ASCII without spaces: safe in keys, logs, URLs and CQL text alike.
    if not all("!" <= ch <= "~" for ch in value):
        raise InvalidOperation("op_id", "invalid_op_id", "op_id may hold printable ASCII characters only, no spaces")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def identify(body: Any) -> Optional[Tuple[int, str]]:
    """(user_id, op_id) when the body names both validly, so a rejection can be tied to a user."""
    if not isinstance(body, dict):
        return None
    try:
        return _positive_int(body, "user_id", MAX_ID, "invalid_user_id"), _op_id(body)
    except InvalidOperation:
        return None


def parse_operation(body: Any) -> Operation:
    """Validate a decoded JSON body into an Operation, or raise InvalidOperation naming the field.

    Unknown fields are refused rather than ignored: in a money API a misspelt
    ``to_user_id`` must not silently turn into something else.
    """
    if not isinstance(body, dict):
        raise InvalidOperation(None, "invalid_body", "an operation must be a JSON object")
    op_id = _op_id(body)
    user_id = _positive_int(body, "user_id", MAX_ID, "invalid_user_id")
    if "kind" not in body:
        raise InvalidOperation("kind", "missing_field", "kind is required")
    kind = body["kind"]
    if kind not in KINDS:
        raise InvalidOperation("kind", "unknown_kind", f"kind must be one of {', '.join(KINDS)}, got {_show(kind)}")
    allowed = _COMMON_FIELDS + (_TRANSFER_FIELDS if kind == "transfer" else ())
    for name in body:
        if name not in allowed:
            raise InvalidOperation(name, "unknown_field", f"field {_show(name)} is not allowed for kind {kind}")
    asset = _positive_int(body, "asset", MAX_ASSET, "invalid_asset")
    amount = _amount(body)
    if kind != "transfer":
        return Operation(op_id=op_id, kind=kind, user_id=user_id, asset=asset, amount=amount)
    to_user_id = _positive_int(body, "to_user_id", MAX_ID, "invalid_to_user_id")
    if to_user_id == user_id:
        raise InvalidOperation(
            "to_user_id", "accounts_must_be_different", "a transfer needs a payee other than the payer"
        )
    source = body.get("source", "available")
    if source not in SOURCES:
        raise InvalidOperation(
            "source", "invalid_source", f"source must be one of {', '.join(SOURCES)}, got {_show(source)}"
        )
    return Operation(
        op_id=op_id, kind=kind, user_id=user_id, asset=asset, amount=amount, to_user_id=to_user_id, source=source
    )
