"""Trades in the pure core: one fill settled all or nothing across the partitions of its users.

A trade touches up to three users, each on the partition that owns it, and no
partition may read another's accounts. So it runs as a chain of steps, each one
an ordinary decision on one partition, joined by legs on the internal topic:

1. ``reserve`` (the buyer's partition, the trade operation): the buyer's hold
   must cover the quote; it is reserved (``pending``), no balance changes and no
   event is sent yet. Refused: the buyer's rejected event, and nothing else.
2. ``sell`` (the seller's partition, a ``sell`` leg): the seller's hold must
   cover the base. If it does, the seller's side applies and the seller gets its
   event; a ``settle`` leg goes back to the buyer, and a ``fee`` leg to the fee
   account. If not, only a ``settle`` leg carrying the reason goes back: the
   seller's balances never changed.
3. ``settle`` (the buyer's partition): delivered, the reserved quote is captured
   and the base credited; refused, the reservation is dropped. Either way the
   buyer's event is the trade's one result.
4. ``collect_fee`` (the fee account's partition): the fees, which cannot fail.

Every step is applied once per result key and its legs are re-sent with its
stored result, so a crash anywhere finishes the chain and never repeats a step.
A reservation cannot be lost: the hold cannot close, release or expire what a
trade reserved. Between steps money is in flight, never in two places that can
both spend it: the buyer's quote stays locked until ``settle``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Tuple

from app.core.ledger import (
    BALANCE_OVERFLOW,
    MAX_ASSETS,
    TOO_MANY_ASSETS,
    Account,
    Balance,
    Hold,
    Outcome,
    Status,
    with_hold,
)
from app.core.legs import Leg, TradeLeg
from app.core.models import Change, Event, Trade


def sell_key(leg: TradeLeg) -> str:
    """Results-table key of a trade's sell leg, on the seller's partition."""
    trade = leg.trade
    return f"{trade.seller.user_id}|sell|{trade.buyer.user_id}|{trade.op_id}"


def fee_key(leg: TradeLeg) -> str:
    """Results-table key of a trade's fee leg, on the fee account's partition."""
    trade = leg.trade
    return f"{trade.fee_account}|fee|{trade.buyer.user_id}|{trade.op_id}"


def hold_refusal(hold: Optional[Hold], asset: int, amount: int, ts: int) -> Optional[str]:
    """Why a hold cannot give ``amount`` of ``asset`` to a trade at ``ts``, or None."""
    if hold is None:
        return "unknown_hold"
    if hold.asset != asset:
        return "hold_asset_mismatch"
    if hold.expired_at(ts):
        return "hold_expired"
    if amount > hold.free:
        return "insufficient_hold"
    return None


def reserve(account: Account, trade: Trade, ts: int, max_assets: int = MAX_ASSETS) -> Outcome:
    """Step 1, the buyer: reserve the quote in the buyer's hold and room for the base, and ask the seller; or refuse.

    The base the trade will credit is kept as ``incoming`` until it settles, so the
    settlement, which cannot be refused, always fits under MAX_BALANCE and under
    ``max_assets`` (an incoming asset counts as one the account holds).
    """
    hold_id = trade.buyer.hold_id
    hold = account.holds.get(hold_id)
    reason = hold_refusal(hold, trade.quote_asset, trade.quote_amount, ts)
    if reason is None:
        reason = _room_refusal(account, trade.base_asset, _base_in(trade), max_assets)
    if reason is not None:
        seq = account.seq + 1
        return Outcome(replace(account, seq=seq), _event(account, trade, "buyer", seq, ts, reason))
    assert hold is not None
    reserved = with_hold(account, hold_id, replace(hold, pending=hold.pending + trade.quote_amount))
    incoming = _with_incoming(account, trade.base_asset, _base_in(trade))
    return Outcome(replace(reserved, incoming=incoming), None, (TradeLeg("sell", trade, ts, account.seq),))


def sell(account: Account, leg: TradeLeg, max_assets: int = MAX_ASSETS) -> Outcome:
    """Step 2, the seller: deliver the base from the seller's hold and take the quote less its fee, or refuse."""
    trade = leg.trade
    hold_id = trade.seller.hold_id
    hold = account.holds.get(hold_id)
    reason = hold_refusal(hold, trade.base_asset, trade.base_amount, leg.ts)
    if reason is None:
        reason = _room_refusal(account, trade.quote_asset, trade.quote_amount - trade.seller_fee, max_assets)
    if reason is not None:
        return refuse(account, leg, reason)
    assert hold is not None
    hold, base = _capture(hold, account.balance(trade.base_asset), trade.base_amount, trade.release_seller)
    quote = account.balance(trade.quote_asset)
    quote = Balance(quote.available + trade.quote_amount - trade.seller_fee, quote.locked)
    updated = _with_balances(with_hold(account, hold_id, hold), trade, base, quote)
    legs: Tuple[Leg, ...] = (replace(leg, step="settle", reason=None),)
    if trade.has_fees:
        legs += (replace(leg, step="fee", reason=None),)
    return Outcome(updated, _event(updated, trade, "seller", updated.seq, leg.ts, None), legs)


def refuse(account: Account, leg: TradeLeg, reason: str) -> Outcome:
    """The seller's refusal: nothing changes here, and the buyer hears why."""
    return Outcome(account, None, (replace(leg, step="settle", reason=reason),))


def settle(account: Account, leg: TradeLeg) -> Outcome:
    """Step 3, the buyer again: capture the reserved quote and take the base less its fee, or drop the reservation."""
    trade = leg.trade
    hold_id = trade.buyer.hold_id
    hold = account.holds[hold_id]  # a reservation keeps its hold open
    hold = replace(hold, pending=hold.pending - trade.quote_amount)
    seq = account.seq + 1
    account = replace(account, incoming=_with_incoming(account, trade.base_asset, -_base_in(trade)))
    if leg.reason is not None:
        refused = replace(with_hold(account, hold_id, hold), seq=seq)
        return Outcome(refused, _event(refused, trade, "buyer", seq, leg.ts, leg.reason, leg.reserved_after_seq))
    hold, quote = _capture(hold, account.balance(trade.quote_asset), trade.quote_amount, trade.release_buyer)
    base = account.balance(trade.base_asset)
    base = Balance(base.available + trade.base_amount - trade.buyer_fee, base.locked)
    updated = _with_balances(with_hold(account, hold_id, hold), trade, base, quote)
    return Outcome(updated, _event(updated, trade, "buyer", seq, leg.ts, None, leg.reserved_after_seq))


def collect_fee(account: Account, leg: TradeLeg, max_assets: int = MAX_ASSETS) -> Outcome:
    """Step 4, the fee account: both fees, in base and in quote; the trade is done, so it is not refused.

    Fees that would take the fee account past MAX_BALANCE, or past ``max_assets``,
    are parked: a rejected event that moves nothing, for an operator to settle (the
    agent raises an alarm).
    """
    trade = leg.trade
    reason = None
    if not account.takes_assets((trade.base_asset, trade.quote_asset), max_assets):
        reason = TOO_MANY_ASSETS
    elif trade.buyer_fee > account.room(trade.base_asset) or trade.seller_fee > account.room(trade.quote_asset):
        reason = BALANCE_OVERFLOW
    if reason is not None:
        parked = replace(account, seq=account.seq + 1)
        return Outcome(parked, _event(parked, trade, "fee", parked.seq, leg.ts, reason))
    base, quote = account.balance(trade.base_asset), account.balance(trade.quote_asset)
    base = Balance(base.available + trade.buyer_fee, base.locked)
    quote = Balance(quote.available + trade.seller_fee, quote.locked)
    updated = _with_balances(account, trade, base, quote)
    return Outcome(updated, _event(updated, trade, "fee", updated.seq, leg.ts, None))


def _room_refusal(account: Account, asset: int, amount: int, max_assets: int) -> Optional[str]:
    """Why the account cannot be credited ``amount`` of ``asset`` (an asset too many, past MAX_BALANCE), or None."""
    if not account.takes_assets((asset,), max_assets):
        return TOO_MANY_ASSETS
    if amount > account.room(asset):
        return BALANCE_OVERFLOW
    return None


def _base_in(trade: Trade) -> int:
    """What a trade credits its buyer: the base less the buyer's fee."""
    return trade.base_amount - trade.buyer_fee


def _with_incoming(account: Account, asset: int, change: int) -> Dict[int, int]:
    """The account's incoming amounts with one changed; an asset with nothing incoming is dropped."""
    incoming = dict(account.incoming)
    amount = max(0, incoming.get(asset, 0) + change)  # a trade reserved before incoming was kept adds none
    if amount:
        incoming[asset] = amount
    else:
        incoming.pop(asset, None)
    return incoming


def _capture(hold: Hold, balance: Balance, amount: int, release_rest: bool) -> Tuple[Hold, Balance]:
    """A side's hold and balance after the trade took ``amount``, and released what is free if asked."""
    hold = replace(hold, remaining=hold.remaining - amount)
    balance = Balance(balance.available, balance.locked - amount)
    if release_rest:
        balance = Balance(balance.available + hold.free, balance.locked - hold.free)
        hold = replace(hold, remaining=hold.pending)
    return hold, balance


def _with_balances(account: Account, trade: Trade, base: Balance, quote: Balance) -> Account:
    """The account after a step (its holds already set): its two balances, the next seq."""
    balances = {**account.balances, trade.base_asset: base, trade.quote_asset: quote}
    return replace(account, seq=account.seq + 1, balances=balances)


def _event(
    account: Account,
    trade: Trade,
    role: str,
    seq: int,
    ts: int,
    reason: Optional[str],
    reserved_after_seq: Optional[int] = None,
) -> Event:
    """A trade's event for one of its users: its role, and its balances of the assets it moved."""
    if role == "fee":
        assets = [a for a, fee in ((trade.base_asset, trade.buyer_fee), (trade.quote_asset, trade.seller_fee)) if fee]
    else:
        assets = [trade.base_asset, trade.quote_asset]
    changes = tuple(
        Change(asset, account.balance(asset).available, account.balance(asset).locked) for asset in sorted(assets)
    )
    counterparty = {"buyer": trade.seller.user_id, "seller": trade.buyer.user_id}.get(role)
    hold_id = {"buyer": trade.buyer.hold_id, "seller": trade.seller.hold_id}.get(role)
    return Event(
        op_id=trade.op_id,
        kind="trade",
        user_id=user_of(trade, role),
        asset=None,
        amount=None,
        status=Status.ACCEPTED if reason is None else Status.REJECTED,
        reason=reason,
        available=None,
        locked=None,
        seq=seq,
        ts=ts,
        counterparty=counterparty,
        hold_id=hold_id,
        role=role,
        changes=changes,
        trade=trade,
        reserved_after_seq=reserved_after_seq,
    )


def user_of(trade: Trade, role: str) -> int:
    """The user of a role in a trade."""
    if role == "buyer":
        return trade.buyer.user_id
    if role == "seller":
        return trade.seller.user_id
    assert trade.fee_account is not None
    return trade.fee_account
