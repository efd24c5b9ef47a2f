"""What travels on the topics: operations in, events out, legs between partitions.

Everything here is pure: JSON-compatible dicts in, frozen dataclasses out, and an
``InvalidOperation`` naming the field when input cannot be an operation. Money is
an ``int`` in minor units from the wire to the database; a float is refused even
when it happens to be whole, because its digits past 2**53 are not the client's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from app.core.wire import REPEATED, decode_json, show, whole_number
from app.errors import InvalidOperation

KINDS = ("deposit", "withdraw", "lock", "unlock", "transfer", "trade")
SOURCES = ("available", "locked")
MAX_ID = 2**63 - 1  # user ids: positive, below 2**63
MAX_ASSET = 2**31 - 1  # asset ids fit a CQL int
MAX_AMOUNT = 2**63 - 1  # one operation's amount fits a CQL bigint (signed 64-bit)
MAX_OP_ID_CHARS = 64
#: The last millisecond a CQL timestamp (and Python's datetime) can hold: 9999-12-31T23:59:59.999Z.
MAX_TS = 253_402_300_799_999

_COMMON_FIELDS = ("op_id", "kind", "user_id", "asset", "amount")
_TRADE_FIELDS = (
    "op_id",
    "kind",
    "user_id",
    "buyer",
    "seller",
    "base_asset",
    "quote_asset",
    "base_amount",
    "quote_amount",
    "buyer_fee",
    "seller_fee",
    "fee_account",
    "release_rest",
)
_PARTY_FIELDS = frozenset(("user_id", "hold_id"))
ROLES = ("buyer", "seller", "fee")
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
class Party:
    """One side of a trade: the user and the hold its funds come from."""

    user_id: int
    hold_id: str

    def to_json(self) -> Dict[str, Any]:
        """Wire form."""
        return {"user_id": self.user_id, "hold_id": self.hold_id}


@dataclass(frozen=True)
class Trade:
    """One fill of a matching engine, settled all or nothing: the buyer pays quote from its hold, the
    seller delivers base from its hold, each receives the other asset less its fee.

    It is keyed and routed by the buyer (``user_id`` is the buyer's), and ``op_id``
    is the trade id. Everything here is checked when it is read, so a trade that
    gets this far can fail only on the holds (app.core.trading).
    """

    op_id: str
    buyer: Party
    seller: Party
    base_asset: int
    quote_asset: int
    base_amount: int
    quote_amount: int
    buyer_fee: int = 0
    seller_fee: int = 0
    fee_account: Optional[int] = None
    release_buyer: bool = False
    release_seller: bool = False

    kind = "trade"

    @property
    def user_id(self) -> int:
        """The user whose partition applies the trade first: the buyer."""
        return self.buyer.user_id

    @property
    def has_fees(self) -> bool:
        """True when a fee account receives anything."""
        return self.buyer_fee > 0 or self.seller_fee > 0

    def to_json(self) -> Dict[str, Any]:
        """The wire form, as a client would send it (every optional field spelt out)."""
        return {
            "op_id": self.op_id,
            "kind": "trade",
            "user_id": self.user_id,
            "buyer": self.buyer.to_json(),
            "seller": self.seller.to_json(),
            "base_asset": self.base_asset,
            "quote_asset": self.quote_asset,
            "base_amount": self.base_amount,
            "quote_amount": self.quote_amount,
            "buyer_fee": self.buyer_fee,
            "seller_fee": self.seller_fee,
            "fee_account": self.fee_account,
            "release_rest": {"buyer": self.release_buyer, "seller": self.release_seller},
        }


#: What a message of the operations topic can ask for.
Command = Union[Operation, Trade]


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


def _fee(body: Mapping[str, Any], name: str, out_of: int, of_what: str) -> int:
    """A fee: 0 when omitted, else whole minor units, at most what it comes out of."""
    value = body.get(name, 0)
    if value == 0 and not isinstance(value, bool):
        return 0
    fee = whole_number(value, MAX_AMOUNT, digits_allowed=True)
    if fee is None:
        raise InvalidOperation(name, "invalid_fee", f"{name} must be an integer in minor units >= 0, got {show(value)}")
    if fee > out_of:
        raise InvalidOperation(name, "fee_exceeds_amount", f"{name} is more than the {of_what} it comes out of")
    return fee


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


def _party(body: Mapping[str, Any], name: str) -> Party:
    """``buyer`` or ``seller``: exactly a user id and a hold id."""
    if name not in body:
        raise InvalidOperation(name, "missing_field", f"{name} is required")
    value = body[name]
    if not isinstance(value, dict) or set(value) != _PARTY_FIELDS:
        raise InvalidOperation(name, f"invalid_{name}", f"{name} must be an object with exactly user_id and hold_id")
    user_id = whole_number(value["user_id"], MAX_ID)
    if user_id is None:
        raise InvalidOperation(f"{name}.user_id", "invalid_user_id", f"{name}.user_id must be an integer 1..{MAX_ID}")
    try:
        hold_id = check_hold_id(value["hold_id"])
    except InvalidOperation as error:
        raise InvalidOperation(f"{name}.hold_id", error.reason, error.message) from None
    return Party(user_id, hold_id)


def parse_trade(body: Any) -> Trade:
    """Validate a trade, every check that needs no account: the holds are checked where they live."""
    if not isinstance(body, dict):
        raise InvalidOperation(None, "invalid_body", "a trade must be a JSON object")
    for name in body:
        if name not in _TRADE_FIELDS:
            raise InvalidOperation(name, "unknown_field", f"field {show(name)} is not allowed for kind trade")
    op_id, user_id = _op_id(body), _positive_int(body, "user_id", MAX_ID, "invalid_user_id")
    buyer, seller = _party(body, "buyer"), _party(body, "seller")
    if buyer.user_id != user_id:
        raise InvalidOperation("buyer.user_id", "buyer_is_not_user", "a trade is sent as the buyer's operation")
    if seller.user_id == buyer.user_id:
        raise InvalidOperation("seller.user_id", "self_trade", "buyer and seller are the same user")
    base_asset = _positive_int(body, "base_asset", MAX_ASSET, "invalid_asset")
    quote_asset = _positive_int(body, "quote_asset", MAX_ASSET, "invalid_asset")
    if base_asset == quote_asset:
        raise InvalidOperation("quote_asset", "same_asset", "base and quote must be different assets")
    base_amount, quote_amount = _required_amount(body, "base_amount"), _required_amount(body, "quote_amount")
    buyer_fee = _fee(body, "buyer_fee", base_amount, "base_amount")
    seller_fee = _fee(body, "seller_fee", quote_amount, "quote_amount")
    fee_account = _fee_account(body, buyer, seller, buyer_fee + seller_fee > 0)
    release_buyer, release_seller = _release_rest(body)
    return Trade(
        op_id,
        buyer,
        seller,
        base_asset,
        quote_asset,
        base_amount,
        quote_amount,
        buyer_fee,
        seller_fee,
        fee_account,
        release_buyer,
        release_seller,
    )


def _fee_account(body: Mapping[str, Any], buyer: Party, seller: Party, needed: bool) -> Optional[int]:
    value = body.get("fee_account")
    if value is None:
        if needed:
            raise InvalidOperation("fee_account", "missing_field", "a trade with a fee needs the fee_account")
        return None
    account = whole_number(value, MAX_ID)
    if account is None:
        raise InvalidOperation(
            "fee_account", "invalid_fee_account", f"fee_account must be a user id, got {show(value)}"
        )
    if account in (buyer.user_id, seller.user_id):
        raise InvalidOperation(
            "fee_account", "accounts_must_be_different", "the fee account is neither buyer nor seller"
        )
    return account


def _release_rest(body: Mapping[str, Any]) -> Tuple[bool, bool]:
    value = body.get("release_rest", {})
    if not isinstance(value, dict) or not set(value) <= {"buyer", "seller"}:
        raise InvalidOperation(
            "release_rest", "invalid_release_rest", 'release_rest is {"buyer": bool, "seller": bool}'
        )
    flags = (value.get("buyer", False), value.get("seller", False))
    if not all(isinstance(flag, bool) for flag in flags):
        raise InvalidOperation("release_rest", "invalid_release_rest", "release_rest flags are true or false")
    return flags


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
