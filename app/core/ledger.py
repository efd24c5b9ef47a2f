"""The pure ledger core: one operation applied to one account, no I/O.

The agent reads an account, calls a function here, writes what it returns and
sends the event. Everything that decides money lives in this module, so it can be
tested with plain asserts and replayed as a reference model by the verifier.

Rules, per (user, asset): ``available`` and ``locked`` never go below zero; an
operation that would make one negative is rejected with ``insufficient_funds`` and
changes nothing. Every result, accepted or rejected, takes the user's next ``seq``.
Balances are Python integers: one amount fits 64 bits, a sum of many may not, and
the database stores balances as ``varint`` for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from typing import Any, Dict, Mapping, NamedTuple, Optional

from app.core.models import KINDS, MAX_AMOUNT, MAX_ASSET, MAX_ID, Credit, Event, Operation
from app.core.wire import whole_number


class Status(StrEnum):
    """The status of an event: whether the operation changed balances."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


#: The reason of a rejection the agent gives when handling the operation raised an unforeseen error.
PROCESSING_FAILED = "processing_failed"


@dataclass(frozen=True)
class Balance:
    """Funds of one asset: spendable, and held for open orders."""

    available: int = 0
    locked: int = 0


ZERO = Balance()


@dataclass(frozen=True)
class Origin:
    """Where an input message sits, its stream (``operations`` or ``credits``) and offset: the origin of its result.

    A user's messages of one stream live on one partition and are applied in
    offset order, so "the last offset applied" per stream says exactly which
    messages an account already reflects, however the streams interleaved.
    """

    stream: str
    offset: int


@dataclass(frozen=True)
class Account:
    """Everything a user holds, the seq of the user's last event, and the input it has applied."""

    seq: int = 0
    balances: Mapping[int, Balance] = field(default_factory=dict)
    # Last applied offset per input stream: bookkeeping of the agent, not money,
    # so two accounts with equal balances and seq compare equal without it.
    applied: Mapping[str, int] = field(default_factory=dict, compare=False)

    def balance(self, asset: int) -> Balance:
        """The balance of one asset; zero for an asset never touched."""
        return self.balances.get(asset, ZERO)

    def balances_json(self) -> Dict[str, Dict[str, int]]:
        """Balances as JSON: asset ids become object keys (strings)."""
        return {
            str(asset): {"available": b.available, "locked": b.locked} for asset, b in sorted(self.balances.items())
        }

    def to_json(self) -> Dict[str, Any]:
        """Table form."""
        return {"seq": self.seq, "balances": self.balances_json(), "applied": dict(self.applied)}

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> "Account":
        """Inverse of to_json; None (a user never seen) is the empty account."""
        if not body:
            return cls()
        return cls(
            seq=int(body["seq"]),
            balances={
                int(asset): Balance(int(b["available"]), int(b["locked"])) for asset, b in body["balances"].items()
            },
            applied={str(k): int(v) for k, v in body.get("applied", {}).items()},
        )

    def mark(self, origin: Origin) -> "Account":
        """This account, recorded as having applied the message at ``origin``."""
        if self.applied.get(origin.stream, -1) >= origin.offset:
            return self
        return replace(self, applied={**self.applied, origin.stream: origin.offset})


@dataclass(frozen=True)
class StoredResult:
    """A results-table row: the first event of an operation and the message that produced it."""

    event: Event
    origin: Origin

    def to_json(self) -> Dict[str, Any]:
        """Table form."""
        # "source" is the stored name of the origin, kept so that existing tables still read.
        return {"event": self.event.to_json(), "source": [self.origin.stream, self.origin.offset]}

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> Optional["StoredResult"]:
        """Inverse of to_json; None when there is no row."""
        if not body:
            return None
        stream, offset = body["source"]
        return cls(event=Event.from_json(body["event"]), origin=Origin(str(stream), int(offset)))


class Outcome(NamedTuple):
    """What applying one operation produced: the new account, its event, a credit leg to send."""

    account: Account
    event: Event
    credit: Optional[Credit] = None


def operation_key(user_id: int, op_id: str) -> str:
    """Results-table key of a client operation (the idempotency key)."""
    return f"{user_id}|op|{op_id}"


def credit_key(credit: Credit) -> str:
    """Results-table key of a transfer's credit leg, on the payee's partition.

    ``op`` and ``in`` sit at a fixed place after the digits of the user id, so a
    client's op_id can never collide with a credit's key.
    """
    return f"{credit.payee}|in|{credit.payer}|{credit.op_id}"


class Decision(Enum):
    """What to do with an input message, given the account and the stored result of its key."""

    APPLY = "apply"
    APPLY_LATE = "apply_late"
    RESEND = "resend"


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
    """
    if origin.offset <= account.applied.get(origin.stream, -1):
        return Decision.RESEND if stored is not None else Decision.APPLY_LATE
    if stored is not None and stored.origin != origin:
        return Decision.RESEND
    return Decision.APPLY


def _event_kind(kind: str) -> str:
    return "transfer_out" if kind == "transfer" else kind


def _moved(current: Balance, operation: Operation) -> Balance:
    """The balance after the operation, negative where funds do not suffice."""
    amount = operation.amount
    if operation.kind == "deposit":
        return Balance(current.available + amount, current.locked)
    if operation.kind == "withdraw":
        return Balance(current.available - amount, current.locked)
    if operation.kind == "lock":
        return Balance(current.available - amount, current.locked + amount)
    if operation.kind == "unlock":
        return Balance(current.available + amount, current.locked - amount)
    if operation.kind == "transfer" and operation.source == "locked":
        return Balance(current.available, current.locked - amount)
    if operation.kind == "transfer":
        return Balance(current.available - amount, current.locked)
    # parse_operation admits only KINDS; this guards a future kind added there alone.
    raise ValueError(f"no rule for kind {operation.kind!r}")


def _result(operation: Operation, balance: Balance, seq: int, ts: int, reason: Optional[str]) -> Event:
    """The event of a client operation: accepted without a reason, rejected with one."""
    return Event(
        op_id=operation.op_id,
        kind=_event_kind(operation.kind),
        user_id=operation.user_id,
        asset=operation.asset,
        amount=operation.amount,
        status=Status.ACCEPTED if reason is None else Status.REJECTED,
        reason=reason,
        available=balance.available,
        locked=balance.locked,
        seq=seq,
        ts=ts,
        counterparty=operation.to_user_id if operation.kind == "transfer" else None,
    )


def apply_operation(account: Account, operation: Operation, ts: int) -> Outcome:
    """Apply one validated client operation; reject it, changing nothing but the seq, if a balance would go negative."""
    current = account.balance(operation.asset)
    new = _moved(current, operation)
    seq = account.seq + 1
    if new.available < 0 or new.locked < 0:
        return Outcome(replace(account, seq=seq), _result(operation, current, seq, ts, "insufficient_funds"))
    balances = {**account.balances, operation.asset: new}
    credit = None
    if operation.kind == "transfer":
        assert operation.to_user_id is not None  # parse_operation guarantees it
        credit = Credit(operation.user_id, operation.to_user_id, operation.op_id, operation.asset, operation.amount, ts)
    return Outcome(replace(account, seq=seq, balances=balances), _result(operation, new, seq, ts, None), credit)


def apply_credit(account: Account, credit: Credit) -> Outcome:
    """Apply the credit leg of a transfer to the payee; it cannot fail, the payer already paid."""
    current = account.balance(credit.asset)
    new = Balance(current.available + credit.amount, current.locked)
    balances = dict(account.balances)
    balances[credit.asset] = new
    seq = account.seq + 1
    event = Event(
        op_id=credit.op_id,
        kind="transfer_in",
        user_id=credit.payee,
        asset=credit.asset,
        amount=credit.amount,
        status=Status.ACCEPTED,
        reason=None,
        available=new.available,
        locked=new.locked,
        seq=seq,
        ts=credit.ts,
        counterparty=credit.payer,
    )
    return Outcome(replace(account, seq=seq, balances=balances), event)


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
    )
    return Outcome(replace(account, seq=seq), event)
