"""The invariants (docs/design.md), checked over everything the pipeline wrote. Pure: no I/O.

Input is what a verifier read once the pipeline was idle: the operations topic
(in partition order), the events topic (every copy), and optionally the tables
(read through a worker) and the database. The reference model is the pure core
itself: each user's events, in seq order, name the order in which the worker
applied that user's operations; replaying those operations through
``app.core.ledger`` must give byte-identical events. The checks:

- ``seq_gap`` / ``seq_conflict``: per user, seqs run 1..n; a repeated seq is an identical copy.
- ``duplicate_result``: one (user, op_id), or one credit leg, with two different seqs.
- ``missing_result`` / ``unexplained_event``: an operation without a result, or the reverse.
- ``reference_mismatch``: an event other than what the pure core gives for that operation.
- ``negative_balance``; ``transfer_not_landed`` (an accepted transfer_out without its transfer_in, or
  refused there for the balance limit and not returned to its payer).
- ``holds_over_locked``: a user's holds of an asset lock more than the asset's ``locked``;
  ``hold_overdrawn``: a hold reserved beyond what it locks, or left open with nothing in it.
- ``trade_half_applied``: a trade with some of its events and not the others (buyer, seller, fee
  account), or with events that disagree on its terms. A trade's reservation of the buyer's quote
  has no event; the buyer's settled event names the seq it came after, and the model applies it there.
- ``conservation``: per asset, sum of available + locked, plus credits parked past the balance
  limit, != accepted deposits - withdrawals.
- ``table_mismatch`` / ``db_mismatch``: the tables or the database differ from the fold of events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from app.core import trading
from app.core.ledger import (
    MAX_ASSETS,
    PROCESSING_FAILED,
    Account,
    Outcome,
    Status,
    apply_credit,
    apply_expiry,
    apply_operation,
    is_parked,
    reject_invalid,
)
from app.core.legs import Credit, Expiry, TradeLeg
from app.core.models import Event, Intake, Trade, read_operation
from app.errors import InvalidOperation

MAX_EXAMPLES = 10


@dataclass
class Report:
    """Counts and violations; ``ok`` when there are none."""

    counts: Dict[str, int] = field(default_factory=lambda: defaultdict(int))
    violations: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    accounts: Dict[int, Account] = field(default_factory=dict)

    def violate(self, kind: str, detail: str) -> None:
        """Record one violation (details beyond the first few are only counted)."""
        self.counts[f"violation:{kind}"] += 1
        if len(self.violations[kind]) < MAX_EXAMPLES:
            self.violations[kind].append(detail)

    @property
    def total_violations(self) -> int:
        """How many violations were found, of every kind."""
        return sum(v for k, v in self.counts.items() if k.startswith("violation:"))

    @property
    def ok(self) -> bool:
        """True when every invariant holds."""
        return self.total_violations == 0

    def summary(self) -> str:
        """A human-readable summary, one fact per line."""
        lines = [
            f"{name:<28} {value}" for name, value in sorted(self.counts.items()) if not name.startswith("violation:")
        ]
        lines.append(f"{'violations':<28} {self.total_violations}")
        for kind, examples in sorted(self.violations.items()):
            lines.append(f"  {kind}: {self.counts[f'violation:{kind}']}")
            lines.extend(f"    {example}" for example in examples)
        lines.append("RESULT " + ("OK" if self.ok else "VIOLATIONS FOUND"))
        return "\n".join(lines)


def _first_operations(
    operations: Iterable[Tuple[Optional[bytes], bytes]], report: Report, max_operation_bytes: int
) -> Dict[Tuple[int, str], Intake]:
    """The first operation read for each (user, op_id), preferring correctly keyed messages."""
    keyed: Dict[Tuple[int, str], Intake] = {}
    unkeyed: Dict[Tuple[int, str], Intake] = {}
    for key, raw in operations:
        report.counts["operations_read"] += 1
        try:
            intake = read_operation(raw, max_operation_bytes)
        except InvalidOperation:
            report.counts["operations_without_user"] += 1
            continue
        identity = (intake.user_id, intake.op_id)
        target = keyed if key == str(identity[0]).encode() else unkeyed
        target.setdefault(identity, intake)
    for identity, first in unkeyed.items():
        keyed.setdefault(identity, first)
    report.counts["operations_distinct"] = len(keyed)
    return keyed


def _events_by_user(events: Iterable[Mapping[str, Any]], report: Report) -> Dict[int, List[Event]]:
    by_seq: Dict[Tuple[int, int], Event] = {}
    for raw in events:
        report.counts["events_read"] += 1
        event = Event.from_json(raw)
        slot = (event.user_id, event.seq)
        if slot in by_seq:
            report.counts["events_duplicate_copies"] += 1
            if by_seq[slot] != event:
                report.violate("seq_conflict", f"user {event.user_id} seq {event.seq}: {by_seq[slot]} != {event}")
            continue
        by_seq[slot] = event
    users: Dict[int, List[Event]] = defaultdict(list)
    for (user, _), event in sorted(by_seq.items()):
        users[user].append(event)
    report.counts["events_distinct"] = len(by_seq)
    report.counts["users"] = len(users)
    return users


@dataclass
class Replay:
    """What replaying every user's events through the pure core collected, for the checks after it."""

    results: Dict[Tuple[Any, ...], int] = field(default_factory=dict)
    outgoing: Dict[Tuple[int, str], Event] = field(default_factory=dict)
    incoming: Dict[Tuple[int, str], Event] = field(default_factory=dict)
    #: Transfers a payee refused (balance_overflow) that came back to their payer, by (payer, op_id).
    returned: Dict[Tuple[int, str], Event] = field(default_factory=dict)
    #: Per asset, credits parked outside every balance (a return or fees past the balance limit).
    parked: Dict[int, int] = field(default_factory=lambda: defaultdict(int))
    deposits: Dict[int, int] = field(default_factory=lambda: defaultdict(int))
    withdrawals: Dict[int, int] = field(default_factory=lambda: defaultdict(int))
    #: Per trade (buyer, trade id), its events by role.
    trades: Dict[Tuple[int, str], Dict[str, Event]] = field(default_factory=lambda: defaultdict(dict))
    #: (user, hold_id) of every hold opened: a hold id opens one hold.
    holds_opened: Set[Tuple[int, str]] = field(default_factory=set)
    #: The workers' asset limit per account (UBS_MAX_ASSETS_PER_ACCOUNT).
    max_assets: int = MAX_ASSETS


def check(
    operations: Iterable[Tuple[Optional[bytes], bytes]],
    events: Iterable[Mapping[str, Any]],
    tables: Optional[Mapping[int, Optional[Mapping[str, Any]]]] = None,
    db_events: Optional[Iterable[Mapping[str, Any]]] = None,
    db_balances: Optional[Iterable[Mapping[str, Any]]] = None,
    accounts_changelog: Optional[Iterable[Tuple[Optional[bytes], Optional[bytes]]]] = None,
    *,
    max_operation_bytes: int,
    max_assets: int = MAX_ASSETS,
) -> Report:
    """Check every invariant; ``tables`` maps user id -> account JSON with all its holds (None if unknown).

    ``accounts_changelog``: the accounts table's changelog records (key, value),
    each partition in offset order: what a worker rebuilding the table reads.

    ``max_operation_bytes`` is the workers' UBS_MAX_BODY_BYTES: larger messages are
    refused unread and are owed no result. ``max_assets`` is their
    UBS_MAX_ASSETS_PER_ACCOUNT, which the model applies as they do.
    """
    report = Report()
    bodies = _first_operations(operations, report, max_operation_bytes)
    users = _events_by_user(events, report)
    replay = Replay(max_assets=max_assets)
    for user, user_events in users.items():
        report.accounts[user] = _replay_user(user, user_events, bodies, replay, report)
    _check_results(report, bodies, replay)
    _check_transfers(report, replay)
    _check_trades(report, replay)
    _check_conservation(report, replay)
    if tables is not None:
        _check_tables(report, tables)
    if db_events is not None and db_balances is not None:
        _check_database(report, users, db_events, db_balances)
    if accounts_changelog is not None:
        _check_changelog(report, accounts_changelog)
    return report


def _replay_user(
    user: int, events: Sequence[Event], bodies: Mapping[Tuple[int, str], Intake], replay: Replay, report: Report
) -> Account:
    """Fold one user's events through the reference model, checking each against it; the final account."""
    if [e.seq for e in events] != list(range(1, len(events) + 1)):
        report.violate("seq_gap", f"user {user}: seqs {[e.seq for e in events][:20]}")
    reservations = _reservations(events)
    account = _reserve(user, Account(), reservations.get(0, ()), replay, report)
    for event in events:
        report.counts[f"events_{event.status}"] += 1
        _note_result(user, event, replay, report)
        try:
            outcome = _model_outcome(user, account, event, bodies, replay, report)
        except (KeyError, AssertionError) as error:  # the events contradict the model (a trade settles no hold...)
            report.violate("reference_mismatch", f"user {user} seq {event.seq}: the model cannot apply it: {error!r}")
            outcome = None
        if outcome is None:
            account = Account(seq=event.seq, balances=account.balances, holds=account.holds)
            continue
        if outcome.event != event:
            report.violate(
                "reference_mismatch", f"user {user} seq {event.seq}: got {event}, model says {outcome.event}"
            )
        account = _reserve(user, outcome.account, reservations.get(event.seq, ()), replay, report)
        _check_balances(user, event, account, report)
        _note_money(user, event, replay)
    return account


def _model_outcome(
    user: int,
    account: Account,
    event: Event,
    bodies: Mapping[Tuple[int, str], Intake],
    replay: Replay,
    report: Report,
) -> Optional[Outcome]:
    """What the pure core gives for the message behind this event; None (and a violation) if there is none."""
    if event.kind in ("transfer_in", "transfer_returned"):
        assert event.counterparty is not None and event.asset is not None and event.amount is not None
        returned = event.kind == "transfer_returned"
        if returned:
            replay.returned[(user, event.op_id)] = event
        else:
            replay.incoming[(event.counterparty, event.op_id)] = event
        credit = Credit(event.counterparty, user, event.op_id, event.asset, event.amount, event.ts, returned)
        return apply_credit(account, credit, replay.max_assets)
    if event.kind == "hold_expired":
        assert event.hold_id is not None
        report.counts["holds_expired"] += 1
        return apply_expiry(account, Expiry(user, event.hold_id, event.ts))
    if event.kind == "trade" and event.role in ("seller", "fee") and event.trade is not None:
        replay.trades[(event.trade.buyer.user_id, event.op_id)][event.role] = event
        leg = TradeLeg("sell" if event.role == "seller" else "fee", event.trade, event.ts, 0)
        if event.role == "seller":
            return trading.sell(account, leg, replay.max_assets)
        return trading.collect_fee(account, leg, replay.max_assets)
    intake = bodies.get((user, event.op_id))
    if intake is None:
        report.violate("unexplained_event", f"user {user} op_id {event.op_id!r} seq {event.seq}: no such operation")
        return None
    if event.kind == "trade" and isinstance(intake.operation, Trade):
        replay.trades[(user, event.op_id)]["buyer"] = event
        if event.reserved_after_seq is not None:  # settled after a reservation: the seller's answer is the event's
            leg = TradeLeg("settle", intake.operation, event.ts, event.reserved_after_seq, event.reason)
            return trading.settle(account, leg)
    return _reference(account, event, intake, replay, report)


def _reservations(events: Sequence[Event]) -> Dict[int, List[Trade]]:
    """The trades a buyer reserved, by the seq after which each reserved: its settled event says when."""
    found: Dict[int, List[Trade]] = defaultdict(list)
    for event in events:
        if event.role == "buyer" and event.reserved_after_seq is not None and event.trade is not None:
            found[event.reserved_after_seq].append(event.trade)
    return found


def _reserve(user: int, account: Account, trades: Sequence[Trade], replay: Replay, report: Report) -> Account:
    """Apply the reservations that came after the account's last event; each must have been possible."""
    for trade in trades:
        outcome = trading.reserve(account, trade, 0, replay.max_assets)
        if outcome.event is not None:
            report.violate(
                "reference_mismatch", f"user {user} after seq {account.seq}: trade {trade.op_id!r} cannot reserve"
            )
            continue
        account = outcome.account
    return account


def _note_result(user: int, event: Event, replay: Replay, report: Report) -> None:
    """One result per (user, op_id) or credit leg: a second one with another seq is a violation."""
    if event.kind == "transfer_in":
        key: Tuple[Any, ...] = (user, "in", event.counterparty, event.op_id)
    elif event.kind == "transfer_returned":
        key = (user, "ret", event.counterparty, event.op_id)
    elif event.kind == "hold_expired":
        key = (user, "exp", event.hold_id)
    elif event.role in ("seller", "fee") and event.trade is not None:
        key = (user, event.role, event.trade.buyer.user_id, event.op_id)
    else:
        key = (user, event.op_id)
    if key in replay.results and replay.results[key] != event.seq:
        report.violate("duplicate_result", f"{key}: seq {replay.results[key]} and seq {event.seq}")
    replay.results.setdefault(key, event.seq)


def _check_balances(user: int, event: Event, account: Account, report: Report) -> None:
    for asset, balance in account.balances.items():
        if balance.available < 0 or balance.locked < 0:
            report.violate("negative_balance", f"user {user} asset {asset} after seq {event.seq}: {balance}")
        if account.held(asset) > balance.locked:
            report.violate(
                "holds_over_locked", f"user {user} asset {asset} after seq {event.seq}: holds {account.holds_json()}"
            )
    for hold_id, hold in account.holds.items():
        if not 0 <= hold.pending <= hold.remaining or hold.remaining == 0:
            report.violate("hold_overdrawn", f"user {user} hold {hold_id!r} after seq {event.seq}: {hold}")


def _note_money(user: int, event: Event, replay: Replay) -> None:
    """Money entering or leaving the ledger, and transfers to match with their credit legs."""
    if is_parked(event):
        for asset, amount in _parked(event):
            replay.parked[asset] += amount
    if event.status != Status.ACCEPTED:
        return
    if event.kind == "deposit":
        replay.deposits[event.asset or 0] += event.amount or 0
    elif event.kind == "withdraw":
        replay.withdrawals[event.asset or 0] += event.amount or 0
    elif event.kind == "transfer_out":
        replay.outgoing[(user, event.op_id)] = event


def _parked(event: Event) -> List[Tuple[int, int]]:
    """What a parked credit holds, per asset: the returned amount, or the trade's two fees."""
    if event.trade is not None:
        trade = event.trade
        return [(trade.base_asset, trade.buyer_fee), (trade.quote_asset, trade.seller_fee)]
    return [(event.asset or 0, event.amount or 0)]


def _check_results(report: Report, bodies: Mapping[Tuple[int, str], Intake], replay: Replay) -> None:
    for user, op_id in bodies:
        if (user, op_id) not in replay.results:
            report.violate("missing_result", f"user {user} op_id {op_id!r}")


def _check_transfers(report: Report, replay: Replay) -> None:
    """Every accepted transfer_out has its transfer_in (or, refused there, its return), and the reverse."""
    for (payer, op_id), out in replay.outgoing.items():
        landed = replay.incoming.get((payer, op_id))
        if landed is None or (landed.user_id, landed.asset, landed.amount) != (out.counterparty, out.asset, out.amount):
            report.violate("transfer_not_landed", f"payer {payer} op_id {op_id!r} -> {out.counterparty}")
        elif not landed.accepted and (payer, op_id) not in replay.returned:
            report.violate("transfer_not_landed", f"payer {payer} op_id {op_id!r}: refused by the payee, not returned")
    for (payer, op_id), back in replay.returned.items():
        landed = replay.incoming.get((payer, op_id))
        if landed is None or landed.accepted or (back.asset, back.amount) != (landed.asset, landed.amount):
            report.violate("unexplained_event", f"transfer_returned to {payer} op_id {op_id!r}: no refused transfer_in")
    for (payer, op_id), landed in replay.incoming.items():
        if (payer, op_id) not in replay.outgoing:
            report.violate(
                "unexplained_event",
                f"transfer_in to {landed.user_id} from {payer} op_id {op_id!r}: no accepted transfer_out",
            )
    report.counts["transfers_accepted"] = len(replay.outgoing)


def _check_trades(report: Report, replay: Replay) -> None:
    """All or nothing: a delivered trade has buyer, seller and (with fees) fee events; a refused one, the buyer's."""
    for (buyer, trade_id), roles in replay.trades.items():
        settled = roles.get("buyer")
        delivered = settled is not None and settled.accepted
        fees = settled is not None and settled.trade is not None and settled.trade.has_fees
        want = {"buyer", "seller", *(["fee"] if fees else [])} if delivered else {"buyer"}
        if set(roles) != want:
            report.violate(
                "trade_half_applied",
                f"trade {trade_id!r} of buyer {buyer}: events of {sorted(roles)}, want {sorted(want)}",
            )
        terms = {event.trade for event in roles.values()}
        if len(terms) > 1:
            report.violate("trade_half_applied", f"trade {trade_id!r} of buyer {buyer}: events disagree on its terms")
    report.counts["trades_settled"] = sum(1 for roles in replay.trades.values() if "seller" in roles)
    report.counts["trades_refused"] = sum(1 for roles in replay.trades.values() if "seller" not in roles)


def _check_conservation(report: Report, replay: Replay) -> None:
    """Per asset, what all users hold equals what was deposited minus what was withdrawn."""
    held: Dict[int, int] = defaultdict(int)
    for account in report.accounts.values():
        for asset, balance in account.balances.items():
            held[asset] += balance.available + balance.locked
    for asset, amount in replay.parked.items():
        report.counts["credits_parked"] += 1 if amount else 0
        held[asset] += amount
    for asset in sorted(set(held) | set(replay.deposits) | set(replay.withdrawals)):
        if held[asset] != replay.deposits[asset] - replay.withdrawals[asset]:
            report.violate(
                "conservation",
                f"asset {asset}: held (with parked credits) {held[asset]} != deposits {replay.deposits[asset]}"
                f" - withdrawals {replay.withdrawals[asset]}",
            )


def _reference(account: Account, event: Event, intake: Intake, replay: Replay, report: Report) -> Outcome:
    """What the pure core gives for this operation; a ``processing_failed`` event is taken as given.

    The agent answers with that rejection when its decision code raised; no model can
    predict a failure, but the event must still be a rejection that moves no money.
    """
    user, op_id, body = intake.user_id, intake.op_id, intake.body
    if event.reason == PROCESSING_FAILED:
        report.counts["events_processing_failed"] += 1
        return reject_invalid(account, user, op_id, body, PROCESSING_FAILED, event.ts)
    if intake.operation is None:
        assert intake.error is not None
        return reject_invalid(account, user, op_id, body, intake.error.reason, event.ts)
    operation = intake.operation
    if isinstance(operation, Trade):
        return trading.reserve(account, operation, event.ts, replay.max_assets)
    hold = (user, operation.hold_id) if operation.kind == "lock" and operation.hold_id is not None else None
    used = hold in replay.holds_opened
    outcome = apply_operation(account, operation, event.ts, hold_used=used, max_assets=replay.max_assets)
    if hold is not None and outcome.event is not None and outcome.event.accepted:
        replay.holds_opened.add(hold)
    return outcome


def _check_tables(report: Report, tables: Mapping[int, Optional[Mapping[str, Any]]]) -> None:
    for user, account in report.accounts.items():
        stored = tables.get(user)
        got = Account.from_json(stored) if stored else None
        if got != account:
            report.violate(
                "table_mismatch", f"user {user}: table {stored} != fold {account.seq} {account.balances_json()}"
            )
    report.counts["tables_checked"] = len(report.accounts)


def _check_database(
    report: Report,
    users: Mapping[int, Sequence[Event]],
    db_events: Iterable[Mapping[str, Any]],
    db_balances: Iterable[Mapping[str, Any]],
) -> None:
    expected = {(e.user_id, e.seq): e for evs in users.values() for e in evs}
    seen = set()
    for row in db_events:
        event = Event.from_json(row)
        slot = (event.user_id, event.seq)
        seen.add(slot)
        if expected.get(slot) != event:
            report.violate("db_mismatch", f"balance_events {slot}: db {event} != topic {expected.get(slot)}")
    for slot in expected.keys() - seen:
        report.violate("db_mismatch", f"balance_events {slot}: missing in db")

    last_seq: Dict[Tuple[int, int], int] = {}
    for user, evs in users.items():
        for event in evs:
            for change in event.balances():
                last_seq[(user, change.asset)] = event.seq
    rows = {(int(r["user_id"]), int(r["asset"])): r for r in db_balances}
    for (user, asset), seq in last_seq.items():
        stored = rows.get((user, asset))
        balance = report.accounts[user].balance(asset)
        want = (balance.available, balance.locked, seq)
        got = (stored["available"], stored["locked"], stored["seq"]) if stored else None
        if got != want:
            report.violate("db_mismatch", f"balances ({user}, {asset}): db {got} != fold {want}")
    report.counts["db_rows_checked"] = len(seen) + len(rows)


def _check_changelog(report: Report, records: Iterable[Tuple[Optional[bytes], Optional[bytes]]]) -> None:
    """A rebuild from the accounts changelog gives every account as the events left it.

    Along a user's records (compaction may have removed some) the seq never
    goes back: a record that does was written by a worker that no longer owned
    the user (a write landing after the new owner's), and the last record is
    what the next rebuild keeps. (A seq can stand for two states: a trade's
    reservation moves money to locked before its event.)
    """
    last: Dict[int, Tuple[int, Dict[str, Any]]] = {}
    for key, value in records:
        report.counts["changelog_records_read"] += 1
        if key is None or not key.isdigit():
            continue
        user = int(key)
        if value is None:
            last.pop(user, None)
            continue
        row = Account.from_json(json.loads(value))
        before = last.get(user)
        if before is not None and row.seq < before[0]:
            report.violate(
                "changelog_regression",
                f"user {user}: seq {row.seq} {row.balances_json()} written after seq {before[0]} {before[1]}",
            )
        last[user] = (row.seq, row.balances_json())
    for user, account in report.accounts.items():
        rebuilt = last.get(user)
        want = (account.seq, account.balances_json())
        if rebuilt != want:
            report.violate("changelog_mismatch", f"user {user}: a rebuild gives {rebuilt}, the events {want}")
    report.counts["changelog_users_checked"] = len(report.accounts)
