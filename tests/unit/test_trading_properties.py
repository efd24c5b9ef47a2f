"""Property-based tests of holds and trades: the pure core against a deliberately naive model.

Hypothesis generates streams of deposits, locks (anonymous or by hold id, some
expiring), releases, captures, trades with fees and expiries among a few users.
The system under test is the pure core, each trade run through its whole chain
of steps (reserve, sell, settle, collect the fees). The reference model keeps
plain integers: available, anonymous locked, and each hold's remainder. They
must agree on every status, balance and hold after every step, and no asset may
appear or vanish.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import trading
from app.core.ledger import Account, apply_expiry, apply_operation
from app.core.legs import Credit, Expiry, TradeLeg
from app.core.models import Operation, Party, Trade

USERS = [1, 2, 3]
FEES = 9
ASSETS = [1, 2]  # in trades 1 is the base, 2 the quote
HOLD_IDS = ["h1", "h2", "h3"]
EXPIRES = 5_000  # every expiring hold expires then; every operation happens before
TS = 1_000


@dataclass(frozen=True)
class Step:
    kind: str
    user: int
    asset: int
    amount: Optional[int]
    hold_id: Optional[str] = None
    other: int = 1  # payee, or seller of a trade
    other_hold: str = "h1"
    quote: int = 1
    fees: Tuple[int, int] = (0, 0)
    expires: bool = False
    release: Tuple[bool, bool] = (False, False)


amounts = st.integers(1, 60)
steps = st.one_of(
    st.builds(
        Step, kind=st.just("deposit"), user=st.sampled_from(USERS), asset=st.sampled_from(ASSETS), amount=amounts
    ),
    st.builds(
        Step,
        kind=st.just("lock"),
        user=st.sampled_from(USERS),
        asset=st.sampled_from(ASSETS),
        amount=amounts,
        hold_id=st.one_of(st.none(), st.sampled_from(HOLD_IDS)),
        expires=st.booleans(),
    ),
    st.builds(
        Step,
        kind=st.just("unlock"),
        user=st.sampled_from(USERS),
        asset=st.sampled_from(ASSETS),
        amount=st.one_of(st.none(), amounts),
        hold_id=st.one_of(st.none(), st.sampled_from(HOLD_IDS)),
    ),
    st.builds(
        Step,
        kind=st.just("capture"),
        user=st.sampled_from(USERS),
        asset=st.sampled_from(ASSETS),
        amount=amounts,
        hold_id=st.sampled_from(HOLD_IDS),
        other=st.sampled_from(USERS),
    ),
    st.builds(
        Step,
        kind=st.just("trade"),
        user=st.sampled_from(USERS),
        asset=st.just(1),
        amount=amounts,
        hold_id=st.sampled_from(["h1", "h1", "h2", "h3"]),  # mostly the bids
        other=st.sampled_from(USERS),
        other_hold=st.sampled_from(["h2", "h2", "h1", "h3"]),  # mostly the asks
        quote=amounts,
        fees=st.tuples(st.integers(0, 3), st.integers(0, 3)),
        release=st.tuples(st.booleans(), st.booleans()),
    ),
    st.builds(
        Step,
        kind=st.just("expire"),
        user=st.sampled_from(USERS),
        asset=st.just(1),
        amount=st.none(),
        hold_id=st.sampled_from(HOLD_IDS),
    ),
)


class Naive:
    """Plain integers: what each user has available, locked without a hold, and in each hold."""

    def __init__(self) -> None:
        self.available: Dict[Tuple[int, int], int] = defaultdict(int)
        self.anonymous: Dict[Tuple[int, int], int] = defaultdict(int)
        self.holds: Dict[Tuple[int, str], Tuple[int, int, bool]] = {}  # asset, remaining, expires
        self.used: Set[Tuple[int, str]] = set()

    def locked(self, user: int, asset: int) -> int:
        held = sum(rem for (u, _), (a, rem, _) in self.holds.items() if u == user and a == asset)
        return self.anonymous[(user, asset)] + held

    def take(self, user: int, hold_id: str, asset: int, amount: Optional[int]) -> Optional[int]:
        """What leaves the hold (None: refused); the hold closes when it is empty."""
        hold = self.holds.get((user, hold_id))
        if hold is None or hold[0] != asset:
            return None
        wanted = hold[1] if amount is None else amount
        if wanted == 0 or wanted > hold[1]:
            return None
        self.release(user, hold_id, wanted)
        return wanted

    def release(self, user: int, hold_id: str, amount: int) -> None:
        asset, remaining, expires = self.holds[(user, hold_id)]
        if remaining == amount:
            del self.holds[(user, hold_id)]
        else:
            self.holds[(user, hold_id)] = (asset, remaining - amount, expires)

    def apply(self, s: Step) -> bool:
        mine = (s.user, s.asset)
        if s.kind == "deposit":
            assert s.amount is not None
            self.available[mine] += s.amount
            return True
        if s.kind == "lock":
            assert s.amount is not None
            if self.available[mine] < s.amount or (s.hold_id and (s.user, s.hold_id) in self.used):
                return False
            self.available[mine] -= s.amount
            if s.hold_id is None:
                self.anonymous[mine] += s.amount
            else:
                self.holds[(s.user, s.hold_id)] = (s.asset, s.amount, s.expires)
                self.used.add((s.user, s.hold_id))
            return True
        if s.kind == "unlock" and s.hold_id is None:
            assert s.amount is not None
            if self.anonymous[mine] < s.amount:
                return False
            self.anonymous[mine] -= s.amount
            self.available[mine] += s.amount
            return True
        if s.kind in ("unlock", "capture"):
            assert s.hold_id is not None
            taken = self.take(s.user, s.hold_id, s.asset, s.amount)
            if taken is None:
                return False
            self.available[(s.other if s.kind == "capture" else s.user, s.asset)] += taken
            return True
        if s.kind == "expire":
            assert s.hold_id is not None
            hold = self.holds.get((s.user, s.hold_id))
            if hold is None or not hold[2]:
                return False
            self.available[(s.user, hold[0])] += hold[1]
            del self.holds[(s.user, s.hold_id)]
            return True
        return self.trade(s)

    def trade(self, s: Step) -> bool:
        assert s.hold_id is not None and s.amount is not None
        bid, ask = self.holds.get((s.user, s.hold_id)), self.holds.get((s.other, s.other_hold))
        if bid is None or bid[0] != 2 or bid[1] < s.quote or ask is None or ask[0] != 1 or ask[1] < s.amount:
            return False
        self.release(s.user, s.hold_id, s.quote)
        self.release(s.other, s.other_hold, s.amount)
        for user, hold_id, asset, wanted in (
            (s.user, s.hold_id, 2, s.release[0]),
            (s.other, s.other_hold, 1, s.release[1]),
        ):
            rest = self.holds.get((user, hold_id))
            if wanted and rest is not None:
                self.available[(user, asset)] += rest[1]
                del self.holds[(user, hold_id)]
        buyer_fee, seller_fee = s.fees
        self.available[(s.user, 1)] += s.amount - buyer_fee
        self.available[(s.other, 2)] += s.quote - seller_fee
        self.available[(FEES, 1)] += buyer_fee
        self.available[(FEES, 2)] += seller_fee
        return True


class Core:
    """The pure core, one account per user, each trade's chain run to its end."""

    def __init__(self) -> None:
        self.accounts: Dict[int, Account] = defaultdict(Account)
        self.used: Set[Tuple[int, str]] = set()
        self.n = 0

    def apply(self, s: Step) -> bool:
        self.n += 1
        if s.kind == "trade":
            return self.trade(s)
        if s.kind == "expire":
            assert s.hold_id is not None
            outcome = apply_expiry(self.accounts[s.user], Expiry(s.user, s.hold_id, EXPIRES))
            self.accounts[s.user] = outcome.account
            return outcome.event is not None
        kind = "transfer" if s.kind == "capture" else s.kind
        extra = {"to_user_id": s.other, "source": "locked"} if kind == "transfer" else {}
        expires = EXPIRES if s.kind == "lock" and s.hold_id and s.expires else None
        op = Operation(f"o{self.n}", kind, s.user, s.asset, s.amount, hold_id=s.hold_id, expires_at_ms=expires, **extra)  # type: ignore[arg-type]
        used = s.kind == "lock" and (s.user, s.hold_id) in self.used
        outcome = apply_operation(self.accounts[s.user], op, TS, hold_used=used)
        self.accounts[s.user] = outcome.account
        assert outcome.event is not None
        accepted = outcome.event.accepted
        if accepted and s.kind == "lock" and s.hold_id:
            self.used.add((s.user, s.hold_id))
        for leg in outcome.legs:
            assert isinstance(leg, Credit)
            landed = apply_operation(
                self.accounts[leg.payee], Operation("c", "deposit", leg.payee, leg.asset, leg.amount), TS
            )
            self.accounts[leg.payee] = landed.account  # a credit lands like a deposit in the balances
        return accepted

    def trade(self, s: Step) -> bool:
        assert s.hold_id is not None and s.amount is not None
        buyer_fee, seller_fee = s.fees
        terms = Trade(
            f"t{self.n}",
            Party(s.user, s.hold_id),
            Party(s.other, s.other_hold),
            1,
            2,
            s.amount,
            s.quote,
            buyer_fee,
            seller_fee,
            FEES if any(s.fees) else None,
            release_buyer=s.release[0],
            release_seller=s.release[1],
        )
        reserved = trading.reserve(self.accounts[s.user], terms, TS)
        self.accounts[s.user] = reserved.account
        if reserved.event is not None:
            return False
        (sell,) = reserved.legs
        assert isinstance(sell, TradeLeg)
        sold = trading.sell(self.accounts[s.other], sell)
        self.accounts[s.other] = sold.account
        settle, *fee = sold.legs
        assert isinstance(settle, TradeLeg)
        settled = trading.settle(self.accounts[s.user], settle)
        self.accounts[s.user] = settled.account
        for leg in fee:
            assert isinstance(leg, TradeLeg)
            collected = trading.collect_fee(self.accounts[FEES], leg)
            self.accounts[FEES] = collected.account
        assert settled.event is not None
        assert (sold.event is not None) == settled.event.accepted  # the seller hears of it only if it delivered
        return settled.event.accepted


def valid(s: Step) -> bool:
    """What parse_operation would let through: no self-trade or self-capture, fees within amounts,
    an amount for every anonymous unlock."""
    if s.kind == "unlock" and s.hold_id is None and s.amount is None:
        return False
    return not (s.kind in ("trade", "capture") and s.other == s.user) and not (
        s.kind == "trade" and (s.fees[0] > s.amount or s.fees[1] > s.quote)  # type: ignore[operator]
    )


#: Every user starts with funds and two orders (a bid in the quote, an ask in the base), so that
#: trades, captures and releases find something to act on.
PROLOGUE = [
    step
    for user in USERS
    for step in (
        Step("deposit", user, 1, 200),
        Step("deposit", user, 2, 200),
        Step("lock", user, 2, 100, hold_id="h1", expires=user == 1),
        Step("lock", user, 1, 100, hold_id="h2"),
    )
]


@settings(max_examples=400, deadline=None)
@given(st.lists(steps.filter(valid), max_size=50))
def test_holds_and_trades_agree_with_a_naive_model(stream: List[Step]) -> None:
    core, naive = Core(), Naive()
    for step in PROLOGUE + stream:
        assert core.apply(step) == naive.apply(step), step
        for user in [*USERS, FEES]:
            account = core.accounts[user]
            for asset in ASSETS:
                balance = account.balance(asset)
                assert (balance.available, balance.locked) == (
                    naive.available[(user, asset)],
                    naive.locked(user, asset),
                )
                assert account.held(asset) <= balance.locked
            holds = {hid: (h.asset, h.remaining) for hid, h in account.holds.items()}
            assert holds == {hid: (a, rem) for (u, hid), (a, rem, _) in naive.holds.items() if u == user}
            assert all(h.pending == 0 for h in account.holds.values())  # every chain ran to its end
    for asset in ASSETS:
        total = sum(a.balance(asset).available + a.balance(asset).locked for a in core.accounts.values())
        assert total == sum(v for (_, a), v in naive.available.items() if a == asset) + sum(
            v for (_, a), v in naive.anonymous.items() if a == asset
        ) + sum(rem for (a, rem, _) in naive.holds.values() if a == asset)
