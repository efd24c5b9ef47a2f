"""What travels between the ledger's own partitions, on its internal topic (``balance.credits``).

A leg is sent by the agent (or its expiry timer) and applied by the agent on the
partition of the user it is for. Only UBSCore writes that topic, but Kafka does
not enforce it: every leg is read strictly, and a malformed or forged one is
refused (dead-lettered), never turned into money by a lenient ``int()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional, Union

from app.core.models import MAX_AMOUNT, MAX_ASSET, MAX_ID, MAX_TS, Trade, check_hold_id, check_op_id, parse_trade
from app.core.wire import decode_json, show, whole_number
from app.errors import InvalidOperation

_CREDIT_FIELDS = frozenset(("payer", "payee", "op_id", "asset", "amount", "ts"))
_EXPIRY_FIELDS = frozenset(("leg", "user_id", "hold_id", "expires_at_ms"))
_TRADE_LEG_FIELDS = frozenset(("leg", "trade", "ts", "reserved_after_seq", "reason"))
#: A trade's legs, in the order they run: the seller's side, the buyer's settlement, the fee account's credit.
TRADE_STEPS = ("sell", "settle", "fee")


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
    #: A credit the payee could not take, on its way back: ``payer`` is then the refusing payee.
    returned: bool = False

    @property
    def recipient(self) -> int:
        """The user whose partition applies it."""
        return self.payee

    def returned_to_payer(self) -> "Credit":
        """This credit sent back to its payer, who is owed it when the payee cannot take it."""
        return replace(self, payer=self.payee, payee=self.payer, returned=True)

    def to_json(self) -> Dict[str, Any]:
        """Wire form on the credits topic; ``returned`` only on a return, as legs were first written without it."""
        body: Dict[str, Any] = {name: getattr(self, name) for name in _CREDIT_FIELD_ORDER}
        if self.returned:
            body["returned"] = True
        return body

    @classmethod
    def from_json(cls, body: Any) -> "Credit":
        """Read a credit leg back off the credits topic, refusing anything this agent would not have sent.

        Only the agent writes that topic, but Kafka does not enforce it: a malformed or
        forged leg must be refused, never turned into money by a lenient ``int()``.
        """
        if not isinstance(body, dict) or set(body) - {"returned"} != _CREDIT_FIELDS:
            raise InvalidOperation(
                None, "invalid_credit", f"a credit leg has exactly the fields {sorted(_CREDIT_FIELDS)} (and returned)"
            )
        returned = body.get("returned", False)
        if returned is not True and "returned" in body:
            raise InvalidOperation("returned", "invalid_credit", "returned of a credit leg is true when present")
        numbers = {}
        for name, maximum in (("payer", MAX_ID), ("payee", MAX_ID), ("asset", MAX_ASSET), ("amount", MAX_AMOUNT)):
            numbers[name] = whole_number(body[name], maximum)
            if numbers[name] is None:
                raise InvalidOperation(name, "invalid_credit", f"{name} of a credit leg is {show(body[name])}")
        ts = whole_number(body["ts"], MAX_TS)
        if ts is None:
            raise InvalidOperation("ts", "invalid_credit", f"ts of a credit leg is {show(body['ts'])}")
        try:
            op_id = check_op_id(body["op_id"])
        except InvalidOperation as error:
            raise InvalidOperation("op_id", "invalid_credit", f"op_id of a credit leg: {error.message}") from None
        return cls(op_id=op_id, ts=ts, returned=returned, **numbers)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Expiry:
    """The release of a hold at its expiry, put on the ledger's internal topic by the expiry timer.

    Whether it releases anything is decided when it is applied, from the hold as
    the account then holds it: a timer that fires twice, or late, or for a hold
    already closed, changes nothing more.
    """

    user_id: int
    hold_id: str
    expires_at_ms: int

    @property
    def recipient(self) -> int:
        """The user whose partition applies it."""
        return self.user_id

    def to_json(self) -> Dict[str, Any]:
        """Wire form on the internal topic."""
        return {"leg": "expire", "user_id": self.user_id, "hold_id": self.hold_id, "expires_at_ms": self.expires_at_ms}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Expiry":
        """Read an expiry leg back, refusing anything the timer would not have sent."""
        if set(body) != _EXPIRY_FIELDS:
            raise InvalidOperation(
                None, "invalid_leg", f"an expiry leg has exactly the fields {sorted(_EXPIRY_FIELDS)}"
            )
        user_id = whole_number(body["user_id"], MAX_ID)
        expires_at_ms = whole_number(body["expires_at_ms"], MAX_TS)
        if user_id is None or expires_at_ms is None:
            raise InvalidOperation("user_id", "invalid_leg", "user_id or expires_at_ms of an expiry leg is invalid")
        return cls(user_id=user_id, hold_id=check_hold_id(body["hold_id"]), expires_at_ms=expires_at_ms)


@dataclass(frozen=True)
class TradeLeg:
    """One step of a trade after the buyer's partition reserved the quote (app.core.trading).

    ``sell`` goes to the seller, which delivers or refuses; ``settle`` comes back to
    the buyer with the seller's answer (``reason`` None: delivered); ``fee`` goes to
    the fee account once the seller delivered. ``ts`` is the trade's own time (the
    broker's timestamp of the trade operation), so every partition judges the
    holds' expiry at the same instant, on every replay.
    """

    step: str
    trade: Trade
    ts: int
    reserved_after_seq: int
    reason: Optional[str] = None

    @property
    def recipient(self) -> int:
        """The user whose partition applies it."""
        if self.step == "sell":
            return self.trade.seller.user_id
        if self.step == "fee":
            assert self.trade.fee_account is not None  # a fee leg is sent only for a trade with fees
            return self.trade.fee_account
        return self.trade.buyer.user_id

    def to_json(self) -> Dict[str, Any]:
        """Wire form on the internal topic."""
        return {
            "leg": f"trade_{self.step}",
            "trade": self.trade.to_json(),
            "ts": self.ts,
            "reserved_after_seq": self.reserved_after_seq,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "TradeLeg":
        """Read a trade leg back, refusing anything the agent would not have sent."""
        step = str(body["leg"])[len("trade_") :]
        if set(body) != _TRADE_LEG_FIELDS or step not in TRADE_STEPS:
            raise InvalidOperation(
                None, "invalid_leg", f"a trade leg has exactly the fields {sorted(_TRADE_LEG_FIELDS)}"
            )
        try:
            trade = parse_trade(body["trade"])
        except InvalidOperation as error:
            raise InvalidOperation("trade", "invalid_leg", f"trade of a leg: {error.message}") from None
        ts, after = body["ts"], body["reserved_after_seq"]
        if whole_number(ts, MAX_TS) is None or isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidOperation("ts", "invalid_leg", "ts or reserved_after_seq of a trade leg is invalid")
        reason = body["reason"]
        if reason is not None and (step != "settle" or not isinstance(reason, str) or not 0 < len(reason) <= 64):
            raise InvalidOperation("reason", "invalid_leg", "only a settle leg carries a reason")
        if step == "fee" and not trade.has_fees:
            raise InvalidOperation("leg", "invalid_leg", "a fee leg is for a trade with fees")
        return cls(step, trade, ts, after, reason)


_CREDIT_FIELD_ORDER = tuple(field.name for field in fields(Credit) if field.name != "returned")

Leg = Union[Credit, Expiry, TradeLeg]


def read_leg(raw: Optional[bytes]) -> Leg:
    """Read one message of the internal topic, refusing anything the agent or its timer would not have sent."""
    return leg_from_json(decode_json(raw))


def leg_from_json(body: Any) -> Leg:
    """A decoded leg: a credit (the original form, without a ``leg`` field) or a leg named by ``leg``."""
    if isinstance(body, dict) and "leg" in body:
        if body["leg"] == "expire":
            return Expiry.from_json(body)
        if isinstance(body["leg"], str) and body["leg"].startswith("trade_"):
            return TradeLeg.from_json(body)
        raise InvalidOperation("leg", "invalid_leg", f"unknown leg {show(body['leg'])}")
    return Credit.from_json(body)
