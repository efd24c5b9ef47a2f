"""What travels on the topics: operations in, events out, legs between partitions.

Everything here is pure: JSON-compatible dicts in, frozen dataclasses out, and an
``InvalidOperation`` naming the field when input cannot be an operation. Money is
an ``int`` in minor units from the wire to the database; a float is refused even
when it happens to be whole, because its digits past 2**53 are not the client's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from app.core.wire import REPEATED, decode_json, show, whole_number
from app.errors import InvalidOperation

KINDS = ("deposit", "withdraw", "lock", "unlock", "transfer")
SOURCES = ("available", "locked")
MAX_ID = 2**63 - 1  # user ids: positive, below 2**63
MAX_ASSET = 2**31 - 1  # asset ids fit a CQL int
MAX_AMOUNT = 2**63 - 1  # one operation's amount fits a CQL bigint (signed 64-bit)
MAX_OP_ID_CHARS = 64
#: The last millisecond a CQL timestamp (and Python's datetime) can hold: 9999-12-31T23:59:59.999Z.
MAX_TS = 253_402_300_799_999

_COMMON_FIELDS = ("op_id", "kind", "user_id", "asset", "amount")
_EXTRA_FIELDS: Dict[str, Tuple[str, ...]] = {
    "lock": ("hold_id", "expires_at_ms"),
    "unlock": ("hold_id",),
    "transfer": ("to_user_id", "source", "hold_id"),
}


@dataclass(frozen=True)
class Operation:
    """A validated client operation; ``to_user_id`` and ``source`` matter only for transfers.

    ``hold_id`` names a hold: the one a ``lock`` opens (with an optional
    ``expires_at_ms``), the one an ``unlock`` releases or a ``transfer`` from
    ``locked`` captures. ``amount`` is None only for an ``unlock`` of a hold,
    which then releases all that remains of it.
    """

    op_id: str
    kind: str
    user_id: int
    asset: int
    amount: Optional[int]
    to_user_id: Optional[int] = None
    source: str = "available"
    hold_id: Optional[str] = None
    expires_at_ms: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        """The wire form, as a client would send it."""
        body: Dict[str, Any] = {"op_id": self.op_id, "kind": self.kind, "user_id": self.user_id, "asset": self.asset}
        if self.amount is not None:
            body["amount"] = self.amount
        if self.kind == "transfer":
            body["to_user_id"] = self.to_user_id
            body["source"] = self.source
        if self.hold_id is not None:
            body["hold_id"] = self.hold_id
        if self.expires_at_ms is not None:
            body["expires_at_ms"] = self.expires_at_ms
        return body


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
    hold_id: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """Wire form; every field is always present (null where it does not apply)."""
        # Every field is a scalar, so a flat copy is what dataclasses.asdict would build, at a fraction of its cost.
        return {name: getattr(self, name) for name in _EVENT_FIELD_ORDER}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Event":
        """Rebuild an event read back from a table, a topic or the database."""
        return cls(**{name: body.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def accepted(self) -> bool:
        """True when the operation changed balances."""
        return self.status == "accepted"


_EVENT_FIELD_ORDER = tuple(field.name for field in fields(Event))
#: Fields every event has had from the first release; later ones may be absent from older events.
_FIRST_EVENT_FIELDS = frozenset(_EVENT_FIELD_ORDER[: _EVENT_FIELD_ORDER.index("counterparty") + 1])

EVENT_KINDS = ("deposit", "withdraw", "lock", "unlock", "transfer_out", "transfer_in", "hold_expired", "unknown")


def read_event(raw: Optional[bytes]) -> Event:
    """Read one message of balance.events, refusing anything the ledger could not have written.

    The sink writes what it reads into typed CQL columns; a value out of a column's
    range would fail in the driver on every retry and stop the sink, so each field
    is checked here instead and a bad message is skipped (InvalidOperation).
    """
    body = decode_json(raw)
    if not isinstance(body, dict) or not _FIRST_EVENT_FIELDS <= set(body):
        raise InvalidOperation(None, "invalid_event", "an event is an object with every field of Event")
    _event_number(body, "user_id", MAX_ID)
    _event_number(body, "seq", MAX_ID)
    _event_number(body, "ts", MAX_TS)
    for name, maximum in (("asset", MAX_ASSET), ("amount", MAX_AMOUNT), ("counterparty", MAX_ID)):
        _event_number(body, name, maximum, optional=True)
    for name in ("available", "locked"):
        value = body[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidOperation(name, "invalid_event", f"{name} of an event is {show(value)}")
    try:
        check_op_id(body["op_id"])
        if body.get("hold_id") is not None:
            check_hold_id(body["hold_id"])
    except InvalidOperation as error:
        raise InvalidOperation(error.field, "invalid_event", error.message) from None
    if body["kind"] not in EVENT_KINDS or body["status"] not in ("accepted", "rejected"):
        raise InvalidOperation("kind", "invalid_event", f"kind {show(body['kind'])}, status {show(body['status'])}")
    reason = body["reason"]
    if reason is not None and not (isinstance(reason, str) and 0 < len(reason) <= 64 and reason.isascii()):
        raise InvalidOperation("reason", "invalid_event", f"reason of an event is {show(reason)}")
    return Event.from_json(body)


def _event_number(body: Mapping[str, Any], name: str, maximum: int, optional: bool = False) -> None:
    value = body[name]
    if value is None and optional:
        return
    if whole_number(value, maximum) is None:
        raise InvalidOperation(name, "invalid_event", f"{name} of an event is {show(value)}")


def _positive_int(body: Mapping[str, Any], name: str, maximum: int, reason: str) -> int:
    if name not in body:
        raise InvalidOperation(name, "missing_field", f"{name} is required")
    value = whole_number(body[name], maximum)
    if value is None:
        raise InvalidOperation(
            name, reason, f"{name} must be a JSON integer between 1 and {maximum}, got {show(body[name])}"
        )
    return value


def _amount(body: Mapping[str, Any], optional: bool = False) -> Optional[int]:
    if "amount" not in body and optional:
        return None
    if "amount" not in body:
        raise InvalidOperation("amount", "missing_field", "amount is required")
    value = whole_number(body["amount"], MAX_AMOUNT, digits_allowed=True)
    if value is None:
        raise InvalidOperation(
            "amount",
            "invalid_amount",
            f"amount must be an integer in minor units between 1 and {MAX_AMOUNT} (a JSON integer or a string"
            f" of 1-19 ASCII digits), got {show(body['amount'])}",
        )
    return value


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
    for name, value in body.items():
        if value is REPEATED:
            raise InvalidOperation(name, "duplicate_field", f"field {show(name)} is given more than once")
    op_id = _op_id(body)
    user_id = _positive_int(body, "user_id", MAX_ID, "invalid_user_id")
    if "kind" not in body:
        raise InvalidOperation("kind", "missing_field", "kind is required")
    kind = body["kind"]
    if kind not in KINDS:
        raise InvalidOperation("kind", "unknown_kind", f"kind must be one of {', '.join(KINDS)}, got {show(kind)}")
    allowed = _COMMON_FIELDS + _EXTRA_FIELDS.get(kind, ())
    for name in body:
        if name not in allowed:
            raise InvalidOperation(name, "unknown_field", f"field {show(name)} is not allowed for kind {kind}")
    asset = _positive_int(body, "asset", MAX_ASSET, "invalid_asset")
    hold_id = check_hold_id(body["hold_id"]) if "hold_id" in body else None
    amount = _amount(body, optional=kind == "unlock" and hold_id is not None)
    expires_at_ms = None
    if "expires_at_ms" in body:
        if hold_id is None:
            raise InvalidOperation("hold_id", "missing_field", "expires_at_ms applies to a hold: hold_id is required")
        expires_at_ms = _positive_int(body, "expires_at_ms", MAX_TS, "invalid_expires_at_ms")
    if kind != "transfer":
        return Operation(op_id, kind, user_id, asset, amount, hold_id=hold_id, expires_at_ms=expires_at_ms)
    to_user_id = _positive_int(body, "to_user_id", MAX_ID, "invalid_to_user_id")
    if to_user_id == user_id:
        raise InvalidOperation(
            "to_user_id", "accounts_must_be_different", "a transfer needs a payee other than the payer"
        )
    source = body.get("source", "available")
    if source not in SOURCES:
        raise InvalidOperation(
            "source", "invalid_source", f"source must be one of {', '.join(SOURCES)}, got {show(source)}"
        )
    if hold_id is not None and source != "locked":
        raise InvalidOperation("source", "invalid_source", 'a transfer from a hold takes source "locked"')
    return Operation(op_id, kind, user_id, asset, amount, to_user_id=to_user_id, source=source, hold_id=hold_id)


@dataclass(frozen=True)
class Intake:
    """An operation message read as far as it goes: whose it is, and the operation or why it is invalid."""

    user_id: int
    op_id: str
    body: Mapping[str, Any]
    operation: Optional[Operation]
    error: Optional[InvalidOperation]


def read_operation(raw: Optional[bytes], max_bytes: int) -> Intake:
    """Read one message of the operations topic, the same way in the agent and in the verifier.

    Raises InvalidOperation when the message cannot be tied to a (user_id, op_id): it
    can only be dead-lettered. Otherwise the client is owed a result, accepted or not,
    and ``error`` says why the operation is invalid if it is. Messages over
    ``max_bytes`` are refused unread, as the gateway refuses such bodies.
    """
    if raw is not None and len(raw) > max_bytes:
        raise InvalidOperation(None, "body_too_large", f"an operation is limited to {max_bytes} bytes")
    body = decode_json(raw)
    identity = identify(body)
    if identity is None:
        raise _why_unidentified(body)
    try:
        operation: Optional[Operation] = parse_operation(body)
        error: Optional[InvalidOperation] = None
    except InvalidOperation as invalid:
        operation, error = None, invalid
    return Intake(user_id=identity[0], op_id=identity[1], body=body, operation=operation, error=error)


def _why_unidentified(body: Any) -> InvalidOperation:
    try:
        parse_operation(body)
    except InvalidOperation as error:
        return error
    return InvalidOperation(None, "invalid_body", "operation names no valid user_id and op_id")
