"""What clients send: operations as JSON bytes, client retries, and ids used again after the retention window.

The generator knows what it asked for (the holds it opened, by name, and a rough
estimate of what each user has if everything it sent succeeded), never what the
ledger answered. So it also sends what must be refused: unlocks of holds that
expired, trades against holds already spent, second locks under a used hold id,
an invalid amount now and then. Two follow-ups aim at the races a replay can
decide the other way: the cancel of an expiring hold sent about when it expires
(the unlock or the expiry leg first), and a lock sized to need a transfer just
sent to its user (the credit leg or the lock first).

Each epoch numbers its op ids ``o0, o1...`` per user and its expiring holds
``h0, h1...`` afresh, so every id of an epoch is used again by the next one,
after at least the retention window: often for the same kind of operation
between the same users (the same transfer's payee, the same trade's seller),
which is where a row left from the first use could answer for the second. Holds
that never expire get ids of their own (``k<epoch>x<n>``): one may still be open
in a later epoch, and a lock under its id would then rightly be refused.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.simulator.world import World

Body = Dict[str, Any]

#: Reusable hold ids start with this letter (tests.simulator.checks renames them per epoch).
EXPIRING_PREFIX = "h"


@dataclass(frozen=True)
class HoldIntent:
    """A hold this workload asked to open; whether it did is the ledger's business."""

    user_id: int
    hold_id: str
    asset: int
    amount: int
    expires_at_ms: Optional[int]


@dataclass(frozen=True)
class Shape:
    """What an op id was used for, so the next epoch can use it again for the same kind of thing."""

    kind: str
    counterpart: Optional[int]


@dataclass(frozen=True)
class FollowUp:
    """An operation to send once the clock reaches ``due_ms``: a cancel (``hold``) or a lock needing a credit."""

    due_ms: int
    user_id: int
    asset: int
    hold: Optional[HoldIntent] = None
    needs: int = 0


class Workload:
    """Client operations, one at a time, drawn from the seed's generator."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.epoch = -1
        self.produced = 0
        self._counters: Dict[int, int] = {}
        self._hold_counters: Dict[int, int] = {}
        #: Holds asked for in this epoch; holds that never expire, asked for in earlier ones.
        self._holds: List[HoldIntent] = []
        self._open_ended: List[HoldIntent] = []
        self._sent: List[Tuple[int, bytes]] = []
        self._funding: List[Tuple[int, int, int]] = []
        self._follow_ups: List[FollowUp] = []
        #: What each (user, asset) would have available if everything sent had succeeded.
        self._estimate: Dict[Tuple[int, int], int] = {}
        self._shapes: Dict[Tuple[int, int], Shape] = {}
        self._previous_shapes: Dict[Tuple[int, int], Shape] = {}

    def start_epoch(self, epoch: int) -> None:
        """A new retention window: every id numbering starts again; the first one starts with deposits."""
        self.epoch = epoch
        self.produced = 0
        if epoch == 0:
            # Some users rich, some poor: a lock or a withdrawal near the edge can go either way on a replay.
            self._funding = [
                (user_id, asset, self.rng.choice((50, 200, 1000)))
                for user_id in self.world.users
                for asset in self.world.assets
                if self.rng.random() < 0.8
            ]
        self._counters = {}
        self._hold_counters = {}
        self._open_ended += [hold for hold in self._holds if hold.expires_at_ms is None]
        self._holds = []
        self._sent = []
        self._follow_ups = []
        self._previous_shapes, self._shapes = self._shapes, {}

    @property
    def done(self) -> bool:
        """This epoch's operations are all sent."""
        return self.produced >= self.world.ops_per_epoch

    def next(self, now_ms: int) -> Tuple[int, bytes, bool]:
        """The next message a client sends: (user id, body, whether it is a retry of an earlier one)."""
        if self._sent and self.rng.random() < self.world.faults.retry:
            user_id, raw = self._sent[-1 - min(len(self._sent) - 1, int(self.rng.expovariate(0.3)))]
            return user_id, raw, True
        funding = self._funding.pop(0) if self._funding else None
        follow_up = self._due(now_ms) if funding is None else None
        if funding is None:
            self.produced += 1
        if funding is not None:
            user_id = funding[0]
        elif follow_up is not None:
            user_id = follow_up.user_id
        else:
            user_id = self.rng.choice(self.world.users)
        number = self._counters.get(user_id, 0)
        self._counters[user_id] = number + 1
        op_id = f"o{number}"
        shape = self._previous_shapes.get((user_id, number))
        body: Optional[Body] = None
        if funding is not None:
            body = {"op_id": op_id, "kind": "deposit", "user_id": user_id, "asset": funding[1], "amount": funding[2]}
        elif follow_up is not None:
            body = self._follow(follow_up, op_id, now_ms)
        elif shape is not None and self.rng.random() < 0.6:
            body = self._build(shape.kind, user_id, op_id, now_ms, shape.counterpart)
        while body is None:
            body = self._build(self._kind(), user_id, op_id, now_ms, None)
        self._estimate_effect(body)
        self._shapes[(user_id, number)] = Shape(str(body["kind"]), _counterpart(body))
        raw = json.dumps(body, separators=(",", ":")).encode()
        self._sent.append((user_id, raw))
        return user_id, raw, False

    # -- follow-ups ------------------------------------------------------------------------------------------------

    def _due(self, now_ms: int) -> Optional[FollowUp]:
        for index, follow_up in enumerate(self._follow_ups):
            if follow_up.due_ms <= now_ms:
                return self._follow_ups.pop(index)
        return None

    def _follow(self, follow_up: FollowUp, op_id: str, now_ms: int) -> Body:
        user_id, asset = follow_up.user_id, follow_up.asset
        if follow_up.hold is not None:
            return {
                "op_id": op_id,
                "kind": "unlock",
                "user_id": user_id,
                "asset": asset,
                "hold_id": follow_up.hold.hold_id,
            }
        amount = max(
            1, self._estimate.get((user_id, asset), 0) + follow_up.needs - self.rng.randint(0, follow_up.needs)
        )
        return self._lock_hold(user_id, op_id, now_ms, asset, amount)

    def _estimate_effect(self, body: Body) -> None:
        """Book what the operation would do if it succeeded, where it could (a rough guide for the follow-ups)."""
        kind, user_id = body["kind"], body["user_id"]
        if kind == "trade" or not isinstance(body.get("amount"), (int, str)) or int(body["amount"]) <= 0:
            return
        key, amount = (user_id, body["asset"]), int(body["amount"])
        have = self._estimate.get(key, 0)
        if kind == "deposit":
            self._estimate[key] = have + amount
        elif kind in ("withdraw", "lock", "transfer") and body.get("source", "available") == "available":
            if amount <= have:
                self._estimate[key] = have - amount
                if kind == "transfer":
                    payee = (body["to_user_id"], body["asset"])
                    self._estimate[payee] = self._estimate.get(payee, 0) + amount

    # -- kinds -----------------------------------------------------------------------------------------------------

    def _kind(self) -> str:
        kinds = (
            ("deposit", 16),
            ("withdraw", 7),
            ("lock", 5),
            ("lock_hold", 20),
            ("unlock", 4),
            ("unlock_hold", 8),
            ("transfer", 12),
            ("transfer_locked", 3),
            ("capture", 5),
            ("trade", 16),
            ("lock_used", 2),
            ("invalid", 2),
        )
        return self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]

    def _build(self, kind: str, user_id: int, op_id: str, now_ms: int, counterpart: Optional[int]) -> Optional[Body]:
        builders: Dict[str, Callable[[], Optional[Body]]] = {
            "deposit": lambda: self._plain("deposit", user_id, op_id, 100, 1000),
            "withdraw": lambda: self._plain("withdraw", user_id, op_id, 1, 300),
            "lock": lambda: self._plain("lock", user_id, op_id, 1, 200),
            "unlock": lambda: self._plain("unlock", user_id, op_id, 1, 200),
            "lock_hold": lambda: self._lock_hold(user_id, op_id, now_ms),
            "lock_used": lambda: self._lock_used(user_id, op_id),
            "unlock_hold": lambda: self._unlock_hold(user_id, op_id),
            "transfer": lambda: self._transfer(user_id, op_id, counterpart, "available", now_ms),
            "transfer_locked": lambda: self._transfer(user_id, op_id, counterpart, "locked", now_ms),
            "capture": lambda: self._capture(user_id, op_id, counterpart, now_ms),
            "trade": lambda: self._trade(user_id, op_id, counterpart),
            "invalid": lambda: {**self._plain("deposit", user_id, op_id, 1, 9), "amount": -5},
        }
        return builders[kind]()

    def _amount(self, low: int, high: int) -> Any:
        value = self.rng.randint(low, high)
        return str(value) if self.rng.random() < 0.1 else value  # a string of digits is a valid amount too

    def _plain(self, kind: str, user_id: int, op_id: str, low: int, high: int) -> Body:
        asset = self.rng.choice(self.world.assets)
        return {"op_id": op_id, "kind": kind, "user_id": user_id, "asset": asset, "amount": self._amount(low, high)}

    def _lock_hold(
        self, user_id: int, op_id: str, now_ms: int, asset: Optional[int] = None, amount: Optional[int] = None
    ) -> Body:
        """An order's funds under a new hold id: expiring (a reusable id) or not (an id of its own)."""
        body = self._plain("lock", user_id, op_id, 10, 200)
        if asset is not None and amount is not None:
            body.update(asset=asset, amount=amount)
        else:
            have = self._estimate.get((user_id, body["asset"]), 0)
            if have > 1 and self.rng.random() < 0.75:  # mostly what the user has: orders that can trade
                body["amount"] = self.rng.randint(1, max(1, have * 2 // 3))
        number = self._hold_counters.get(user_id, 0)
        self._hold_counters[user_id] = number + 1
        expires: Optional[int] = None
        if self.rng.random() < 0.6:
            # One in twenty is already past when it arrives: refused as hold_expired.
            expires = now_ms + (self.rng.randint(300, 30_000) if self.rng.random() < 0.95 else -1)
            body["hold_id"] = f"{EXPIRING_PREFIX}{number}"
            body["expires_at_ms"] = expires
        else:
            body["hold_id"] = f"k{self.epoch}x{number}"
        hold = HoldIntent(user_id, body["hold_id"], body["asset"], int(body["amount"]), expires)
        self._holds.append(hold)
        if expires is not None and self.rng.random() < 0.8:
            due = max(now_ms, expires + self.rng.randint(-500, 1500))
            self._follow_ups.append(FollowUp(due, user_id, hold.asset, hold=hold))
        return body

    def _holds_of(self, user_id: int) -> List[HoldIntent]:
        return [hold for hold in (*self._holds, *self._open_ended) if hold.user_id == user_id]

    def _lock_used(self, user_id: int, op_id: str) -> Optional[Body]:
        """A lock under a hold id used in this window: refused. (In a later window the id is free again.)"""
        mine = [hold for hold in self._holds if hold.user_id == user_id]
        if not mine:
            return None
        hold = self.rng.choice(mine)
        body = {**self._plain("lock", user_id, op_id, 1, 50), "asset": hold.asset, "hold_id": hold.hold_id}
        if hold.expires_at_ms is not None:
            body["expires_at_ms"] = hold.expires_at_ms
        return body

    def _unlock_hold(self, user_id: int, op_id: str) -> Optional[Body]:
        mine = self._holds_of(user_id)
        if not mine:
            return None
        hold = self.rng.choice(mine)
        body: Body = {
            "op_id": op_id,
            "kind": "unlock",
            "user_id": user_id,
            "asset": hold.asset,
            "hold_id": hold.hold_id,
        }
        if self.rng.random() < 0.5:
            body["amount"] = self._amount(1, hold.amount)
        return body

    def _payee(self, user_id: int, counterpart: Optional[int]) -> int:
        if counterpart is not None and counterpart != user_id:
            return counterpart
        return self.rng.choice([user for user in self.world.parties if user != user_id])

    def _transfer(self, user_id: int, op_id: str, counterpart: Optional[int], source: str, now_ms: int) -> Body:
        """A payment; now and then its payee locks right after, more than it has without it."""
        body = self._plain("transfer", user_id, op_id, 1, 200)
        payee = self._payee(user_id, counterpart)
        body["to_user_id"] = payee
        if source == "locked" or self.rng.random() < 0.5:
            body["source"] = source
        if payee in self.world.users and self.rng.random() < 0.4:
            needs = int(body["amount"])
            self._follow_ups.append(FollowUp(now_ms + self.rng.randint(500, 5000), payee, body["asset"], needs=needs))
        return body

    def _capture(self, user_id: int, op_id: str, counterpart: Optional[int], now_ms: int) -> Optional[Body]:
        mine = self._holds_of(user_id)
        if not mine:
            return None
        hold = self.rng.choice(mine)
        body = self._transfer(user_id, op_id, counterpart, "locked", now_ms)
        body.update(asset=hold.asset, hold_id=hold.hold_id, amount=self._amount(1, hold.amount))
        return body

    def _trade(self, buyer: int, op_id: str, counterpart: Optional[int]) -> Optional[Body]:
        """A fill of the buyer's bid (a hold of the quote asset) against a seller's ask (a hold of the base)."""
        bids = self._orders(self._holds_of(buyer))
        if not bids:
            return None
        bid = self.rng.choice(bids)
        sellers = [counterpart] if counterpart is not None and counterpart != buyer else list(self.world.users)
        asks = [
            hold for seller in sellers if seller != buyer for hold in self._holds_of(seller) if hold.asset != bid.asset
        ]
        asks = self._orders(asks)
        if not asks:
            return None
        ask = self.rng.choice(asks)
        # Fills of part of each order, so that an order usually takes several.
        base_amount = self.rng.randint(1, max(1, ask.amount // 3))
        quote_amount = self.rng.randint(1, max(1, bid.amount // 3))
        body: Body = {
            "op_id": op_id,
            "kind": "trade",
            "user_id": buyer,
            "buyer": {"user_id": buyer, "hold_id": bid.hold_id},
            "seller": {"user_id": ask.user_id, "hold_id": ask.hold_id},
            "base_asset": ask.asset,
            "quote_asset": bid.asset,
            "base_amount": base_amount,
            "quote_amount": quote_amount,
        }
        if self.rng.random() < 0.5:
            body["buyer_fee"] = self.rng.randint(0, min(base_amount, 5))
            body["seller_fee"] = self.rng.randint(0, min(quote_amount, 5))
            body["fee_account"] = self.world.fee_account
        if self.rng.random() < 0.4:
            body["release_rest"] = {"buyer": self.rng.random() < 0.5, "seller": self.rng.random() < 0.5}
        return body

    def _orders(self, holds: List[HoldIntent]) -> List[HoldIntent]:
        """The holds a matching engine would still fill: mostly orders that do not expire, the latest first."""
        lasting = [hold for hold in holds if hold.expires_at_ms is None]
        if lasting and self.rng.random() < 0.8:
            return lasting[-3:]
        return holds[-3:]


def _counterpart(body: Body) -> Optional[int]:
    if body["kind"] == "transfer":
        return int(body["to_user_id"])
    if body["kind"] == "trade":
        return int(body["seller"]["user_id"])
    return None
