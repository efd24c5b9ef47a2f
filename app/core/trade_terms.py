"""What a trade says: the two parties, the assets and amounts, the fees, and reading it from a body.

A trade arrives as a client command (kind ``trade``) and comes back inside its events, so
its terms and their checks live apart from both. Every check here needs no account; what
the holds allow is decided by the trade rules (app.core.trading).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from app.core.field_checks import MAX_AMOUNT, MAX_ASSET, MAX_ID, _op_id, _positive_int, _required_amount, check_hold_id
from app.core.wire import show, whole_number
from app.errors import InvalidOperation

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
