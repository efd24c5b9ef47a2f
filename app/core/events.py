"""The results published on balance.events: one event per operation (or credit leg), and reading them back.

Every reader rebuilds an event from the same wire form (``Event.from_json``). The sink
writes what it reads into typed CQL columns, so ``read_event`` reads a message as strictly
as a command is read: anything the ledger could not have written is refused
(``invalid_event``) rather than failing in the driver on every retry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from app.core.field_checks import MAX_AMOUNT, MAX_ASSET, MAX_ID, MAX_TS, check_hold_id, check_op_id
from app.core.trade_terms import ROLES, Trade, parse_trade
from app.core.wire import decode_json, show, whole_number
from app.errors import InvalidOperation


@dataclass(frozen=True)
class Change:
    """One asset's balance after a trade, in that trade's event."""

    asset: int
    available: int
    locked: int

    def to_json(self) -> Dict[str, int]:
        """Wire form."""
        return {"asset": self.asset, "available": self.available, "locked": self.locked}


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
    #: Trades only: this user's part in it, its balances after it, and the trade itself.
    role: Optional[str] = None
    changes: Optional[Tuple[Change, ...]] = None
    trade: Optional[Trade] = None
    #: The buyer's event of a trade that reserved the buyer's quote: the buyer's seq when it did.
    reserved_after_seq: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        """Wire form: every field up to ``hold_id`` always present (null where it does not apply), the
        trade fields on trade events only."""
        # A flat copy is what dataclasses.asdict would build for the scalars, at a fraction of its cost.
        body = {name: getattr(self, name) for name in _SCALAR_FIELDS}
        if self.kind == "trade":
            body["role"] = self.role
            body["changes"] = None if self.changes is None else [change.to_json() for change in self.changes]
            body["trade"] = None if self.trade is None else self.trade.to_json()
            body["reserved_after_seq"] = self.reserved_after_seq
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Event":
        """Rebuild an event read back from a table, a topic or the database."""
        fields_ = {name: body.get(name) for name in cls.__dataclass_fields__}
        if fields_["changes"] is not None:
            fields_["changes"] = tuple(Change(**change) for change in fields_["changes"])
        if fields_["trade"] is not None:
            fields_["trade"] = parse_trade(fields_["trade"])
        return cls(**fields_)  # type: ignore[arg-type]

    @property
    def accepted(self) -> bool:
        """True when the operation changed balances."""
        return self.status == "accepted"

    def balances(self) -> Tuple[Change, ...]:
        """The balances this event reports: every asset of a trade, else its one asset (if it names one)."""
        if self.changes is not None:
            return self.changes
        if self.asset is None or self.available is None or self.locked is None:
            return ()
        return (Change(self.asset, self.available, self.locked),)


_EVENT_FIELD_ORDER = tuple(field.name for field in fields(Event))
_SCALAR_FIELDS = _EVENT_FIELD_ORDER[: _EVENT_FIELD_ORDER.index("hold_id") + 1]
#: Fields every event has had from the first release; later ones may be absent from older events.
_FIRST_EVENT_FIELDS = frozenset(_EVENT_FIELD_ORDER[: _EVENT_FIELD_ORDER.index("counterparty") + 1])

EVENT_KINDS = (
    "deposit",
    "withdraw",
    "lock",
    "unlock",
    "transfer_out",
    "transfer_in",
    "transfer_returned",
    "hold_expired",
    "trade",
    "unknown",
)


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
    _check_trade_fields(body)
    return Event.from_json(body)


def _check_trade_fields(body: Mapping[str, Any]) -> None:
    """The fields only trade events fill: each null, or what the ledger writes."""
    if body.get("role") not in (None, *ROLES):
        raise InvalidOperation("role", "invalid_event", f"role of an event is {show(body.get('role'))}")
    changes = body.get("changes")
    if changes is not None:
        if not isinstance(changes, list) or len(changes) > 2 or not all(_is_change(c) for c in changes):
            raise InvalidOperation("changes", "invalid_event", "changes of an event are up to two asset balances")
    seq = body.get("reserved_after_seq")
    if seq is not None and not _is_count(seq, MAX_ID):
        raise InvalidOperation("reserved_after_seq", "invalid_event", f"reserved_after_seq is {show(seq)}")
    if body.get("trade") is not None:
        try:
            parse_trade(body["trade"])
        except InvalidOperation as error:
            raise InvalidOperation("trade", "invalid_event", f"trade of an event: {error.message}") from None


def _is_change(value: Any) -> bool:
    if not isinstance(value, dict) or set(value) != {"asset", "available", "locked"}:
        return False
    return whole_number(value["asset"], MAX_ASSET) is not None and all(
        _is_count(value[name], None) for name in ("available", "locked")
    )


def _is_count(value: Any, maximum: Optional[int]) -> bool:
    """A JSON integer >= 0 (and <= maximum if given); balances have no maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    return maximum is None or value <= maximum


def _event_number(body: Mapping[str, Any], name: str, maximum: int, optional: bool = False) -> None:
    value = body[name]
    if value is None and optional:
        return
    if whole_number(value, maximum) is None:
        raise InvalidOperation(name, "invalid_event", f"{name} of an event is {show(value)}")
