"""The pure ledger core: one operation applied to one account, no I/O.

The agent reads an account, calls a function here, writes what it returns and
sends the event. Everything that decides money lives in this module, so it can be
tested with plain asserts and replayed as a reference model by the verifier.

Rules, per (user, asset): ``available`` and ``locked`` never go below zero; an
operation that would make one negative is rejected with ``insufficient_funds`` and
changes nothing. Every result, accepted or rejected, takes the user's next ``seq``.

Holds: a ``lock`` with a ``hold_id`` puts its amount under that hold, and only
an operation naming the hold can release or capture it; ``locked`` is always at
least what the user's holds of that asset hold, and an anonymous ``unlock`` or
transfer from ``locked`` reaches only the rest. A hold id is used once per user.
Balances are Python integers: one amount fits 64 bits, a sum of many may not, and
the database stores balances as ``varint`` for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from app.core.legs import Credit, Expiry, Leg, leg_from_json
from app.core.models import KINDS, MAX_AMOUNT, MAX_ASSET, MAX_ID, Event, Operation, check_hold_id
from app.core.wire import whole_number
from app.errors import InvalidOperation


class Status(StrEnum):
    """The status of an event: whether the operation changed balances."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


#: The reason of a rejection the agent gives when handling the operation raised an unforeseen error.
PROCESSING_FAILED = "processing_failed"

#: The reason of a rejection that would take a balance past MAX_BALANCE.
BALANCE_OVERFLOW = "balance_overflow"

#: The most one user holds of one asset, available, locked and incoming together: a signed 64-bit
#: integer, what every client, the events' JSON readers and the database columns can represent.
MAX_BALANCE = 2**63 - 1

#: The reason of a rejection that would give an account one asset more than ``max_assets``.
TOO_MANY_ASSETS = "too_many_assets"

#: The most assets one account holds (its balances and incoming together) unless the caller says
#: otherwise (the agent passes UBS_MAX_ASSETS_PER_ACCOUNT): the account row grows with its assets,
#: and it must stay one Kafka record.
MAX_ASSETS = 1000


@dataclass(frozen=True)
class Balance:
    """Funds of one asset: spendable, and held for open orders."""

    available: int = 0
    locked: int = 0


ZERO = Balance()


@dataclass(frozen=True)
class Hold:
    """Funds of one asset locked for one purpose (an order), released or captured only by name.

    ``remaining`` is what the hold still locks, of which ``pending`` is reserved
    by trades in flight (app.core.trading) and only ``free`` can be released or
    captured. A hold is closed (removed) when ``remaining`` reaches zero, by
    release, capture, a trade or expiry; it cannot close while a trade is pending.
    """

    asset: int
    remaining: int
    expires_at_ms: Optional[int] = None
    pending: int = 0

    @property
    def free(self) -> int:
        """What can be released or captured now."""
        return self.remaining - self.pending

    def expired_at(self, ts: int) -> bool:
        """True once ``ts`` has reached the expiry: the hold can no longer be captured."""
        return self.expires_at_ms is not None and ts >= self.expires_at_ms

    def to_json(self) -> Dict[str, Any]:
        """Table form."""
        body: Dict[str, Any] = {"asset": self.asset, "remaining": self.remaining}
        if self.expires_at_ms is not None:
            body["expires_at_ms"] = self.expires_at_ms
        if self.pending:
            body["pending"] = self.pending
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Hold":
        """Inverse of to_json."""
        expires = body.get("expires_at_ms")
        return cls(
            asset=int(body["asset"]),
            remaining=int(body["remaining"]),
            expires_at_ms=None if expires is None else int(expires),
            pending=int(body.get("pending", 0)),
        )


@dataclass(frozen=True)
class Origin:
    """Where an input message sits, its stream (``operations`` or ``credits``) and offset: the origin of its result.

    A user's messages of one stream live on one partition and are applied in
    offset order, so "the last offset applied" per stream says exactly which
    messages an account already reflects, however the streams interleaved.
    """

    stream: str
    offset: int

    def to_json(self) -> List[Any]:
        """Table form, ``[stream, offset]``: the ``source`` of result and hold rows, a hold mark's ``hold``."""
        return [self.stream, self.offset]

    @classmethod
    def from_json(cls, pair: Sequence[Any]) -> "Origin":
        """Inverse of to_json."""
        stream, offset = pair
        return cls(str(stream), int(offset))


class _Derived(Dict[int, int]):
    """``Account.held_total`` when none is given: derived from ``holds``, which are then all of them."""


@dataclass(frozen=True)
class Account:
    """Everything a user holds, the seq of the user's last event, and the input it has applied.

    ``holds`` are the holds a decision needs, not necessarily all of them: each hold
    is a row of its own (the ``holds`` table), and the agent loads the ones its
    message names, so no decision costs more with more open holds (the verifier's
    model keeps all). ``held_total`` is, per asset, what all open holds lock,
    loaded or not; whatever opens, changes or closes a hold keeps it
    (``with_hold``). An account built without it derives it from ``holds``, which
    must then be all of them (rows written before holds had rows of their own, tests).
    """

    seq: int = 0
    balances: Mapping[int, Balance] = field(default_factory=dict)
    holds: Mapping[str, Hold] = field(default_factory=dict)
    #: Per asset, what trades this user buys in are yet to credit (reserved, not settled): room
    #: kept under MAX_BALANCE, so that a settlement, which cannot be refused, always fits.
    incoming: Mapping[int, int] = field(default_factory=dict)
    #: Per asset, what all open holds lock (an asset without holds is absent); ``held`` reads it.
    held_total: Mapping[int, int] = field(default_factory=_Derived)
    # Last applied offset per input stream: bookkeeping of the agent, not money,
    # so two accounts with equal balances and seq compare equal without it.
    applied: Mapping[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.held_total, _Derived):
            totals: Dict[int, int] = {}
            for hold in self.holds.values():
                _add(totals, hold.asset, hold.remaining)
            object.__setattr__(self, "held_total", totals)

    def balance(self, asset: int) -> Balance:
        """The balance of one asset; zero for an asset never touched."""
        return self.balances.get(asset, ZERO)

    def room(self, asset: int) -> int:
        """How much more of an asset this user can receive before reaching MAX_BALANCE."""
        balance = self.balance(asset)
        return MAX_BALANCE - balance.available - balance.locked - self.incoming.get(asset, 0)

    def held(self, asset: int) -> int:
        """What the holds of one asset lock, all of them, loaded or not; the rest of ``locked`` is anonymous."""
        return self.held_total.get(asset, 0)

    def takes_assets(self, assets: Iterable[int], limit: int) -> bool:
        """Whether the account may hold these assets too: it has each already, or the new ones fit under ``limit``."""
        new = {asset for asset in assets if asset not in self.balances and asset not in self.incoming}
        return not new or len(self.balances.keys() | self.incoming.keys() | new) <= limit

    def balances_json(self) -> Dict[str, Dict[str, int]]:
        """Balances as JSON: asset ids become object keys (strings)."""
        return {
            str(asset): {"available": b.available, "locked": b.locked} for asset, b in sorted(self.balances.items())
        }

    def holds_json(self) -> Dict[str, Dict[str, Any]]:
        """Open holds as JSON, by hold id."""
        return {hold_id: hold.to_json() for hold_id, hold in sorted(self.holds.items())}

    def row_json(self) -> Dict[str, Any]:
        """The ``accounts`` table row: all but the holds, which are rows of their own, so it stays small.

        What grows with the account is its assets (balances, ``held``, ``incoming``),
        bounded by the asset limit (``takes_assets``); empty maps are left out.
        """
        body: Dict[str, Any] = {"seq": self.seq, "balances": self.balances_json(), "applied": dict(self.applied)}
        if self.held_total:
            body["held"] = {str(asset): amount for asset, amount in sorted(self.held_total.items())}
        if self.incoming:
            body["incoming"] = {str(asset): amount for asset, amount in sorted(self.incoming.items())}
        return body

    def to_json(self) -> Dict[str, Any]:
        """The row and the holds this account carries, by id: the form of rows written before holds had rows."""
        body = self.row_json()
        if self.holds:
            body["holds"] = self.holds_json()
        return body

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> "Account":
        """Inverse of to_json and row_json; None (a user never seen) is the empty account.

        A row written before holds had rows of their own carries every hold and no
        ``held``: the totals are derived from its holds.
        """
        if not body:
            return cls()
        held = body.get("held")
        return cls(
            seq=int(body["seq"]),
            balances={
                int(asset): Balance(int(b["available"]), int(b["locked"])) for asset, b in body["balances"].items()
            },
            holds={str(hold_id): Hold.from_json(hold) for hold_id, hold in body.get("holds", {}).items()},
            incoming={int(asset): int(amount) for asset, amount in body.get("incoming", {}).items()},
            held_total=_Derived() if held is None else {int(asset): int(amount) for asset, amount in held.items()},
            applied={str(k): int(v) for k, v in body.get("applied", {}).items()},
        )

    def has_applied(self, origin: Origin) -> bool:
        """Whether this account reflects the message at ``origin`` (offsets of a stream apply in order)."""
        return origin.offset <= self.applied.get(origin.stream, -1)

    def mark(self, origin: Origin) -> "Account":
        """This account, recorded as having applied the message at ``origin``."""
        if self.applied.get(origin.stream, -1) >= origin.offset:
            return self
        return replace(self, applied={**self.applied, origin.stream: origin.offset})


@dataclass(frozen=True)
class StoredResult:
    """A results-table row: what a message decided the first time, the message itself, and when.

    ``event`` is its result (None for a leg that changed no one's balances), and
    ``legs`` what it sent to other partitions: a redelivery re-sends both. ``at``
    is the decision time of the message (milliseconds, from the log: see
    ``expired``); None on rows written before it was stored.
    """

    event: Optional[Event]
    origin: Origin
    legs: Tuple[Leg, ...] = ()
    at: Optional[int] = None

    def expired(self, now_ms: int, window_ms: int) -> bool:
        """Whether a message decided at ``now_ms`` no longer meets this row: its window has passed.

        Retention is a property of the data: both times come from the log, so every
        worker, every replay and every rebuild of the table decides alike, whenever
        RocksDB or the changelog physically drop the row (never before twice the
        window). A message never outlives its own row: a redelivery carries the
        time it was first decided at. Rows without a time expire only physically.
        """
        at = self.at if self.at is not None else (None if self.event is None else self.event.ts)
        return at is not None and now_ms - at >= window_ms

    def to_json(self) -> Dict[str, Any]:
        """Table form."""
        # "source" is the stored name of the origin, kept so that existing tables still read.
        body: Dict[str, Any] = {
            "event": None if self.event is None else self.event.to_json(),
            "source": self.origin.to_json(),
        }
        if self.legs:
            body["legs"] = [leg.to_json() for leg in self.legs]
        if self.at is not None:
            body["at"] = self.at
        return body

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> Optional["StoredResult"]:
        """Inverse of to_json; None when there is no row."""
        if not body:
            return None
        event = None if body["event"] is None else Event.from_json(body["event"])
        if "legs" in body:
            legs = tuple(leg_from_json(leg) for leg in body["legs"])
        else:
            legs = _legs_of_first_rows(event)
        at = body.get("at")
        return cls(event=event, origin=Origin.from_json(body["source"]), legs=legs, at=None if at is None else int(at))


def _legs_of_first_rows(event: Optional[Event]) -> Tuple[Leg, ...]:
    """Rows written before results stored their legs: an accepted transfer_out implies its credit."""
    if event is None or event.kind != "transfer_out" or not event.accepted:
        return ()
    assert event.counterparty is not None and event.asset is not None and event.amount is not None
    return (Credit(event.user_id, event.counterparty, event.op_id, event.asset, event.amount, event.ts),)


class Outcome(NamedTuple):
    """What applying one message produced: the new account, its event (if any), the legs to send."""

    account: Account
    event: Optional[Event]
    legs: Tuple[Leg, ...] = ()


def operation_key(user_id: int, op_id: str) -> str:
    """Results-table key of a client operation (the idempotency key)."""
    return f"{user_id}|op|{op_id}"


def credit_key(credit: Credit) -> str:
    """Results-table key of a transfer's credit leg, on the payee's partition (a return: on the payer's).

    ``op``, ``in`` and ``ret`` sit at a fixed place after the digits of the user
    id, so a client's op_id can never collide with a credit's key, nor a return
    with a transfer the other way under the same op_id.
    """
    tag = "ret" if credit.returned else "in"
    return f"{credit.payee}|{tag}|{credit.payer}|{credit.op_id}"


def hold_key(user_id: int, hold_id: str) -> str:
    """Results-table key that marks a hold id as used by a user, for as long as results are kept."""
    return f"{user_id}|hold|{hold_id}"


def expiry_key(expiry: Expiry) -> str:
    """Results-table key of an expiry leg: one hold expires once.

    The expiry time is part of the key, so a hold id used again (after its mark's
    window) never meets the row of its earlier hold's expiry.
    """
    return f"{expiry.user_id}|exp|{expiry.hold_id}|{expiry.expires_at_ms}"


class Decision(Enum):
    """What to do with an input message, given the account and the stored result of its key."""

    APPLY = "apply"
    APPLY_LATE = "apply_late"
    RESEND = "resend"
    DEFER = "defer"


def decide(account: Account, stored: Optional[StoredResult], origin: Origin) -> Decision:
    """Whether the message at ``origin`` must be applied, or only answered with its stored result.

    - At or below the account's last applied offset of its stream: a redelivery of a
      message already applied -> Decision.RESEND its stored result. Without a stored
      result it was never applied: Faust can hand over a record fetched just
      before a rebalance's seek ahead of the records the seek re-reads, so a
      user's messages may arrive out of order once -> Decision.APPLY_LATE.
    - A stored result produced by another message: a client retry of an operation
      applied earlier -> Decision.RESEND.
    - A stored result produced by this very message, beyond the account's offset:
      a worker died after the result write and before the account write, or its
      account was rolled back to the changelog on recovery -> Decision.APPLY again. (A seq
      comparison cannot decide this: after a crash, credits and operations may
      interleave differently and another message may take that seq.)
    - A stored result produced by another message that the account has not applied
      (beyond the account's offset of that message's stream): the same crash, seen
      from a message other than the result's own, such as a trade's first step
      redelivered before its settle leg, which rewrote the trade's result. Resending
      would announce balances no account holds; that message comes back and applies
      again -> Decision.DEFER: nothing now.
    """
    if stored is not None and stored.origin != origin and not account.has_applied(stored.origin):
        return Decision.DEFER
    if account.has_applied(origin):
        return Decision.RESEND if stored is not None else Decision.APPLY_LATE
    if stored is not None and stored.origin != origin:
        return Decision.RESEND
    return Decision.APPLY


def _event_kind(kind: str) -> str:
    return "transfer_out" if kind == "transfer" else kind


def _moved(current: Balance, kind: str, source: str, amount: int) -> Balance:
    """The balance after an operation of ``kind`` moved ``amount``, negative where funds do not suffice."""
    if kind == "deposit":
        return Balance(current.available + amount, current.locked)
    if kind == "withdraw":
        return Balance(current.available - amount, current.locked)
    if kind == "lock":
        return Balance(current.available - amount, current.locked + amount)
    if kind == "unlock":
        return Balance(current.available + amount, current.locked - amount)
    if kind == "transfer" and source == "locked":
        return Balance(current.available, current.locked - amount)
    if kind == "transfer":
        return Balance(current.available - amount, current.locked)
    # parse_operation admits only KINDS; this guards a future kind added there alone.
    raise ValueError(f"no rule for kind {kind!r}")


def _result(
    operation: Operation, balance: Balance, seq: int, ts: int, reason: Optional[str], amount: Optional[int] = None
) -> Event:
    """The event of a client operation: accepted without a reason, rejected with one."""
    return Event(
        op_id=operation.op_id,
        kind=_event_kind(operation.kind),
        user_id=operation.user_id,
        asset=operation.asset,
        amount=operation.amount if amount is None else amount,
        status=Status.ACCEPTED if reason is None else Status.REJECTED,
        reason=reason,
        available=balance.available,
        locked=balance.locked,
        seq=seq,
        ts=ts,
        counterparty=operation.to_user_id if operation.kind == "transfer" else None,
        hold_id=operation.hold_id,
    )


def apply_operation(
    account: Account, operation: Operation, ts: int, hold_used: bool = False, max_assets: int = MAX_ASSETS
) -> Outcome:
    """Apply one validated client operation; reject it, changing nothing but the seq, if it cannot apply.

    ``hold_used`` says that the user's results still mark the operation's hold id
    as used (the agent looks it up): a hold id never opens a second hold. A deposit
    of an asset the account does not hold yet is refused (``too_many_assets``) when
    the account already holds ``max_assets``.
    """
    if operation.hold_id is not None:
        return _apply_to_hold(account, operation, ts, hold_used)
    assert operation.amount is not None  # parse_operation requires it without a hold
    current = account.balance(operation.asset)
    new = _moved(current, operation.kind, operation.source, operation.amount)
    seq = account.seq + 1
    if new.available < 0 or new.locked < account.held(operation.asset):
        return Outcome(replace(account, seq=seq), _result(operation, current, seq, ts, "insufficient_funds"))
    if operation.kind == "deposit" and not account.takes_assets((operation.asset,), max_assets):
        return Outcome(replace(account, seq=seq), _result(operation, current, seq, ts, TOO_MANY_ASSETS))
    if operation.kind == "deposit" and operation.amount > account.room(operation.asset):
        return Outcome(replace(account, seq=seq), _result(operation, current, seq, ts, BALANCE_OVERFLOW))
    balances = {**account.balances, operation.asset: new}
    return Outcome(
        replace(account, seq=seq, balances=balances), _result(operation, new, seq, ts, None), _credit(operation, ts)
    )


def _apply_to_hold(account: Account, operation: Operation, ts: int, hold_used: bool) -> Outcome:
    """A lock that opens a hold, or an unlock or transfer that releases or captures from one."""
    assert operation.hold_id is not None
    seq = account.seq + 1
    current = account.balance(operation.asset)
    hold = account.holds.get(operation.hold_id)
    reason = _hold_refusal(account, operation, ts, hold, hold_used)
    if reason is not None:
        return Outcome(replace(account, seq=seq), _result(operation, current, seq, ts, reason))
    if operation.kind == "lock":
        assert operation.amount is not None
        amount = operation.amount
        holding = with_hold(account, operation.hold_id, Hold(operation.asset, amount, operation.expires_at_ms))
    else:
        assert hold is not None
        amount = hold.free if operation.amount is None else operation.amount
        holding = with_hold(account, operation.hold_id, replace(hold, remaining=hold.remaining - amount))
    new = _moved(current, operation.kind, operation.source, amount)
    updated = replace(holding, seq=seq, balances={**account.balances, operation.asset: new})
    return Outcome(
        updated, _result(operation, new, seq, ts, None, amount), _credit(replace(operation, amount=amount), ts)
    )


def _hold_refusal(
    account: Account, operation: Operation, ts: int, hold: Optional[Hold], hold_used: bool
) -> Optional[str]:
    """Why an operation on a hold cannot apply, or None."""
    if operation.kind == "lock":
        assert operation.amount is not None
        if hold is not None or hold_used:
            return "hold_exists"
        if operation.expires_at_ms is not None and operation.expires_at_ms <= ts:
            return "hold_expired"
        if account.balance(operation.asset).available < operation.amount:
            return "insufficient_funds"
        return None
    if hold is None:
        return "unknown_hold"
    if hold.asset != operation.asset:
        return "hold_asset_mismatch"
    if operation.kind == "transfer" and hold.expired_at(ts):
        return "hold_expired"
    wanted = hold.free if operation.amount is None else operation.amount
    if wanted == 0 or wanted > hold.free:  # 0: all of it is reserved by trades in flight
        return "insufficient_hold"
    return None


def with_hold(account: Account, hold_id: str, hold: Hold) -> Account:
    """The account with one hold opened or changed, closed when it locks nothing more, and ``held`` to match.

    The totals count every open hold, loaded or not, so they move by the difference
    from the hold this one replaces, which the account must carry if it exists (the
    agent loads every hold its message names): the cost is the same for 1 or 50,000
    open holds.
    """
    previous = account.holds.get(hold_id)
    holds = dict(account.holds)
    if hold.remaining == 0:
        holds.pop(hold_id, None)
    else:
        holds[hold_id] = hold
    held = dict(account.held_total)
    if previous is not None:
        _add(held, previous.asset, -previous.remaining)
    _add(held, hold.asset, hold.remaining)
    return replace(account, holds=holds, held_total=held)


def _add(totals: Dict[int, int], asset: int, amount: int) -> None:
    """Add to one asset's total, leaving out an asset whose total is zero."""
    total = totals.get(asset, 0) + amount
    if total:
        totals[asset] = total
    else:
        totals.pop(asset, None)


def _credit(operation: Operation, ts: int) -> Tuple[Leg, ...]:
    """The credit leg an accepted transfer sends to its payee; nothing for other kinds."""
    if operation.kind != "transfer":
        return ()
    assert operation.to_user_id is not None and operation.amount is not None  # parse_operation guarantees it
    return (Credit(operation.user_id, operation.to_user_id, operation.op_id, operation.asset, operation.amount, ts),)


def apply_expiry(account: Account, expiry: Expiry) -> Outcome:
    """Release what remains of a hold at its expiry; nothing when the hold is gone or was replaced.

    The event's time is the expiry itself, so the release is the same whenever
    the timer's leg is applied, and on every replay. While a trade reserved part
    of the hold (reserved before the expiry, so it settles), the release waits:
    nothing changes, and the timer's next leg tries again.
    """
    hold = account.holds.get(expiry.hold_id)
    if hold is None or hold.expires_at_ms != expiry.expires_at_ms or hold.pending:
        return Outcome(account, None)
    current = account.balance(hold.asset)
    new = Balance(current.available + hold.remaining, current.locked - hold.remaining)
    seq = account.seq + 1
    event = Event(
        op_id=expiry.hold_id,
        kind="hold_expired",
        user_id=expiry.user_id,
        asset=hold.asset,
        amount=hold.remaining,
        status=Status.ACCEPTED,
        reason=None,
        available=new.available,
        locked=new.locked,
        seq=seq,
        ts=expiry.expires_at_ms,
        hold_id=expiry.hold_id,
    )
    released = with_hold(account, expiry.hold_id, replace(hold, remaining=0))
    return Outcome(replace(released, seq=seq, balances={**account.balances, hold.asset: new}), event)


def apply_credit(account: Account, credit: Credit, max_assets: int = MAX_ASSETS) -> Outcome:
    """Apply a transfer's credit leg to the payee, or its return to the payer.

    The payer has paid, so a credit is never lost: one that would take the payee
    past MAX_BALANCE, or give it an asset more than ``max_assets``, is refused (a
    rejected ``transfer_in``, ``balance_overflow`` or ``too_many_assets``) and goes
    back to the payer as a return (``transfer_returned``). A return that cannot
    land either (the payer too filled up meanwhile) is parked: a rejected
    ``transfer_returned`` that moves nothing, for an operator to settle (the agent
    raises an alarm).
    """
    kind = "transfer_returned" if credit.returned else "transfer_in"
    seq = account.seq + 1
    current = account.balance(credit.asset)
    reason = None
    if not account.takes_assets((credit.asset,), max_assets):
        reason = TOO_MANY_ASSETS
    elif credit.amount > account.room(credit.asset):
        reason = BALANCE_OVERFLOW
    if reason is not None:
        event = _credit_event(credit, kind, current, seq, reason)
        legs: Tuple[Leg, ...] = () if credit.returned else (credit.returned_to_payer(),)
        return Outcome(replace(account, seq=seq), event, legs)
    new = Balance(current.available + credit.amount, current.locked)
    balances = {**account.balances, credit.asset: new}
    return Outcome(replace(account, seq=seq, balances=balances), _credit_event(credit, kind, new, seq, None))


def _credit_event(credit: Credit, kind: str, balance: Balance, seq: int, reason: Optional[str]) -> Event:
    return Event(
        op_id=credit.op_id,
        kind=kind,
        user_id=credit.payee,
        asset=credit.asset,
        amount=credit.amount,
        status=Status.ACCEPTED if reason is None else Status.REJECTED,
        reason=reason,
        available=balance.available,
        locked=balance.locked,
        seq=seq,
        ts=credit.ts,
        counterparty=credit.payer,
    )


def is_parked(event: Event) -> bool:
    """Whether an event parks a credit outside every balance: a return or a trade's fees that a limit refused.

    Those credits follow a payment already made, so nobody can be answered with
    a refusal; they wait for an operator (the agent's alarm, the verifier's count).
    """
    limits = (BALANCE_OVERFLOW, TOO_MANY_ASSETS)
    return event.reason in limits and (event.kind == "transfer_returned" or event.role == "fee")


def reject_invalid(
    account: Account, user_id: int, op_id: str, body: Mapping[str, Any], reason: str, ts: int
) -> Outcome:
    """A rejected event for input tied to a user but invalid in another field.

    It still takes a seq: the client who sent it is owed exactly one result.
    Fields that were themselves invalid are reported as null.
    """
    kind = body.get("kind")
    asset = whole_number(body.get("asset"), MAX_ASSET)
    amount = whole_number(body.get("amount"), MAX_AMOUNT, digits_allowed=True)
    current = account.balance(asset) if asset is not None else None
    to_user_id = body.get("to_user_id") if kind == "transfer" else None
    seq = account.seq + 1
    event = Event(
        op_id=op_id,
        kind=_event_kind(kind) if kind in KINDS else "unknown",
        user_id=user_id,
        asset=asset,
        amount=amount,
        status=Status.REJECTED,
        reason=reason,
        available=current.available if current else None,
        locked=current.locked if current else None,
        seq=seq,
        ts=ts,
        counterparty=whole_number(to_user_id, MAX_ID),
        hold_id=_valid_hold_id(body.get("hold_id")),
    )
    return Outcome(replace(account, seq=seq), event)


def _valid_hold_id(value: Any) -> Optional[str]:
    try:
        return check_hold_id(value) if value is not None else None
    except InvalidOperation:
        return None
