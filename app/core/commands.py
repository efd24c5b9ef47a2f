"""What clients send on the operations topic: deposit, withdraw, lock, unlock, transfer and trade.

The gateway, the agent and the verifier all read a command with ``parse_operation`` (or
``read_operation`` for a topic message), so a body is accepted or refused for the same
reason wherever it is read: a refusal is an ``InvalidOperation`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from app.core.field_checks import MAX_ASSET, MAX_ID, MAX_TS, _amount, _op_id, _positive_int, check_hold_id
from app.core.trade_terms import Trade, parse_trade
from app.core.wire import REPEATED, decode_json, show
from app.errors import InvalidOperation

KINDS = ("deposit", "withdraw", "lock", "unlock", "transfer", "trade")
SOURCES = ("available", "locked")

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


#: What a message of the operations topic can ask for.
Command = Union[Operation, Trade]


def identify(body: Any) -> Optional[Tuple[int, str]]:
    """(user_id, op_id) when the body names both validly, so a rejection can be tied to a user."""
    if not isinstance(body, dict):
        return None
    try:
        return _positive_int(body, "user_id", MAX_ID, "invalid_user_id"), _op_id(body)
    except InvalidOperation:
        return None


def parse_operation(body: Any) -> Command:
    """Validate a decoded JSON body into an Operation or a Trade, or raise InvalidOperation naming the field.

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
    if kind == "trade":
        return parse_trade(body)
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


def users_named(operation: Command) -> Tuple[int, ...]:
    """Every user an operation names, its own first: a client may submit it only for all of them.

    A transfer credits its payee, a trade moves both sides' funds and pays the fee account.
    """
    named: Tuple[Optional[int], ...] = (
        (operation.buyer.user_id, operation.seller.user_id, operation.fee_account)
        if isinstance(operation, Trade)
        else (operation.user_id, operation.to_user_id)
    )
    return tuple(user_id for user_id in named if user_id is not None)


@dataclass(frozen=True)
class Intake:
    """An operation message read as far as it goes: whose it is, and the operation or why it is invalid."""

    user_id: int
    op_id: str
    body: Mapping[str, Any]
    operation: Optional[Command]
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
        operation: Optional[Command] = parse_operation(body)
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
