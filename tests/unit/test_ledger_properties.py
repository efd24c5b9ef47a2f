"""Property-based tests: the pure core against a deliberately naive reference model.

Hypothesis generates operation streams for a few users, with client retries
(the same op_id again, possibly with another amount) and replays of whole
messages. The system under test is the pure core driven the way the agent drives
it (results keyed by op_id, ``decide`` on offsets); the reference model is a plain
dict of integers that applies each op_id once. They must agree on every balance
and every status, and the invariants must hold after every step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.core.ledger import (
    MAX_BALANCE,
    Account,
    Decision,
    Origin,
    StoredResult,
    apply_credit,
    apply_operation,
    credit_key,
    decide,
    operation_key,
)
from app.core.legs import Credit
from app.core.models import Operation

USERS = [1, 2, 3]
ASSETS = [1, 2]

operations = st.builds(
    Operation,
    op_id=st.sampled_from([f"o{i}" for i in range(12)]),
    kind=st.sampled_from(["deposit", "withdraw", "lock", "unlock", "transfer"]),
    user_id=st.sampled_from(USERS),
    asset=st.sampled_from(ASSETS),
    amount=st.one_of(st.integers(1, 50), st.integers(1, 2**63 - 1)),
    to_user_id=st.sampled_from(USERS),
    source=st.sampled_from(["available", "locked"]),
).filter(lambda op: op.kind != "transfer" or op.to_user_id != op.user_id)

# A stream is a list of (operation, replay): replay re-delivers an earlier message.
streams = st.lists(st.tuples(operations, st.one_of(st.none(), st.integers(0, 40))), max_size=60)


class Reference:
    """Naive model: balances as plain ints, one application per (user, op_id).

    A user's available + locked per asset stays within MAX_BALANCE: a deposit past
    it is rejected, and a transfer the payee has no room for goes back to the payer.
    """

    def __init__(self) -> None:
        self.available: Dict[Tuple[int, int], int] = defaultdict(int)
        self.locked: Dict[Tuple[int, int], int] = defaultdict(int)
        self.seen: Dict[Tuple[int, str], str] = {}

    def apply(self, op: Operation) -> str:
        key = (op.user_id, op.op_id)
        if key in self.seen:
            return self.seen[key]
        slot = (op.user_id, op.asset)
        a, lk = self.available[slot], self.locked[slot]
        changes = {
            "deposit": (a + op.amount, lk),
            "withdraw": (a - op.amount, lk),
            "lock": (a - op.amount, lk + op.amount),
            "unlock": (a + op.amount, lk - op.amount),
            "transfer": (a, lk - op.amount) if op.source == "locked" else (a - op.amount, lk),
        }[op.kind]
        if min(changes) < 0 or sum(changes) > MAX_BALANCE:
            status = "rejected"
        else:
            status = "accepted"
            self.available[slot], self.locked[slot] = changes
            if op.kind == "transfer":
                assert op.to_user_id is not None
                payee = (op.to_user_id, op.asset)
                landing = payee if self.available[payee] + self.locked[payee] + op.amount <= MAX_BALANCE else slot
                self.available[landing] += op.amount
        self.seen[key] = status
        return status


class Driven:
    """The pure core driven like the agent: offsets per stream, results table, credit legs."""

    def __init__(self) -> None:
        self.accounts: Dict[int, Account] = defaultdict(Account)
        self.results: Dict[str, StoredResult] = {}
        self.offset = 0
        self.credit_offset = 0
        self.log: List[Tuple[Operation, int]] = []
        self.deposited: Dict[int, int] = defaultdict(int)
        self.withdrawn: Dict[int, int] = defaultdict(int)

    def deliver(self, op: Operation, offset: Optional[int] = None) -> str:
        if offset is None:
            offset = self.offset
            self.offset += 1
            self.log.append((op, offset))
        origin = Origin("operations", offset)
        key = operation_key(op.user_id, op.op_id)
        account = self.accounts[op.user_id]
        stored = self.results.get(key)
        if decide(account, stored, origin) == Decision.RESEND:
            assert stored is not None
            self.accounts[op.user_id] = account.mark(origin)
            return stored.event.status
        assert decide(account, stored, origin) == Decision.APPLY
        outcome = apply_operation(account, op, ts=1)
        self.results[key] = StoredResult(outcome.event, origin)
        self.accounts[op.user_id] = outcome.account.mark(origin)
        if outcome.event.accepted and op.kind == "deposit":
            self.deposited[op.asset] += op.amount
        if outcome.event.accepted and op.kind == "withdraw":
            self.withdrawn[op.asset] += op.amount
        legs = list(outcome.legs)
        while legs:  # a credit, and the return of one its payee had no room for
            credit = legs.pop(0)
            assert isinstance(credit, Credit)
            credit_origin = Origin("credits", self.credit_offset)
            self.credit_offset += 1
            ckey = credit_key(credit)
            payee = self.accounts[credit.payee]
            assert decide(payee, self.results.get(ckey), credit_origin) == Decision.APPLY
            landed = apply_credit(payee, credit)
            self.results[ckey] = StoredResult(landed.event, credit_origin)
            self.accounts[credit.payee] = landed.account.mark(credit_origin)
            legs.extend(landed.legs)
        return outcome.event.status


def _op(op_id: str, kind: str, user: int, amount: int, to: int = 2) -> Operation:
    return Operation(op_id=op_id, kind=kind, user_id=user, asset=1, amount=amount, to_user_id=to, source="available")


@settings(max_examples=300, deadline=None)
@given(streams)
@example([(_op("o1", "deposit", 1, MAX_BALANCE), None), (_op("o2", "deposit", 1, 1), None)])  # past the limit
@example(  # a transfer its payee has no room for goes back to the payer
    [
        (_op("o1", "deposit", 1, 5), None),
        (_op("o2", "deposit", 2, MAX_BALANCE), None),
        (_op("o3", "transfer", 1, 5), None),
    ]
)
def test_core_agrees_with_reference_under_retries_and_replays(stream: List[Tuple[Operation, Optional[int]]]) -> None:
    driven, reference = Driven(), Reference()
    statuses: Dict[Tuple[int, str], str] = {}
    for op, replay in stream:
        if replay is not None and driven.log:
            old, offset = driven.log[replay % len(driven.log)]
            status = driven.deliver(old, offset)  # a redelivery of an earlier message
            assert status == statuses[(old.user_id, old.op_id)]
            continue
        status = driven.deliver(op)
        expected = reference.apply(op)
        first = statuses.setdefault((op.user_id, op.op_id), status)
        assert status == first == expected
        for user, account in driven.accounts.items():
            for asset, balance in account.balances.items():
                assert balance.available >= 0 and balance.locked >= 0
                assert (balance.available, balance.locked) == (
                    reference.available[(user, asset)],
                    reference.locked[(user, asset)],
                )
    for asset in ASSETS:
        held = sum(a.balance(asset).available + a.balance(asset).locked for a in driven.accounts.values())
        assert held == driven.deposited[asset] - driven.withdrawn[asset]
    for user, account in driven.accounts.items():
        seqs = sorted(r.event.seq for k, r in driven.results.items() if r.event.user_id == user)
        assert seqs == list(range(1, account.seq + 1))
