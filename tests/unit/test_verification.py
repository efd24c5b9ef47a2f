"""The verifier's checks find each kind of violation, and pass a correct run."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from app.core.ledger import Account, apply_credit, apply_operation
from app.core.legs import Credit
from app.core.models import parse_operation
from app.core.verification import check

#: The workers' default UBS_MAX_BODY_BYTES.
LIMIT = 16 * 1024

TS = 1_700_000_000_000


def simulate(
    bodies: List[Dict[str, Any]],
) -> Tuple[List[Tuple[Optional[bytes], bytes]], List[Dict[str, Any]], Dict[int, Any]]:
    """A tiny in-process pipeline built on the pure core: operations, events, final tables."""
    operations = [(str(b["user_id"]).encode(), json.dumps(b).encode()) for b in bodies]
    accounts: Dict[int, Account] = {}
    events: List[Dict[str, Any]] = []
    for body in bodies:
        op = parse_operation(body)
        outcome = apply_operation(accounts.get(op.user_id, Account()), op, TS)
        accounts[op.user_id] = outcome.account
        events.append(outcome.event.to_json())
        legs = list(outcome.legs)
        while legs:  # a credit, and the return of a credit its payee had no room for
            credit = legs.pop(0)
            assert isinstance(credit, Credit)
            landed = apply_credit(accounts.get(credit.payee, Account()), credit)
            accounts[credit.payee] = landed.account
            events.append(landed.event.to_json())
            legs.extend(landed.legs)
    return operations, events, {u: a.to_json() for u, a in accounts.items()}


BODIES = [
    {"op_id": "a", "kind": "deposit", "user_id": 1, "asset": 1, "amount": 100},
    {"op_id": "b", "kind": "lock", "user_id": 1, "asset": 1, "amount": 30},
    {"op_id": "c", "kind": "transfer", "user_id": 1, "to_user_id": 2, "asset": 1, "amount": 30, "source": "locked"},
    {"op_id": "d", "kind": "withdraw", "user_id": 2, "asset": 1, "amount": 500},
    {"op_id": "e", "kind": "withdraw", "user_id": 2, "asset": 1, "amount": 10},
]


def test_correct_run_passes_with_copies_of_events() -> None:
    operations, events, tables = simulate(BODIES)
    report = check(operations + operations[:1], events + events[:2], tables, max_operation_bytes=LIMIT)
    assert report.ok, report.summary()
    assert report.counts["events_duplicate_copies"] == 2


def test_lost_event_is_a_gap_and_a_missing_result() -> None:
    operations, events, _ = simulate(BODIES)
    del events[1]
    report = check(operations, events, max_operation_bytes=LIMIT)
    assert {"seq_gap", "missing_result", "reference_mismatch"} <= set(report.violations)


def test_operation_applied_twice_is_found() -> None:
    operations, events, _ = simulate(BODIES)
    again = dict(events[0], seq=5, available=200)  # deposit "a" applied a second time as seq 5
    report = check(operations, events + [again], max_operation_bytes=LIMIT)
    assert "duplicate_result" in report.violations


def test_conflicting_copy_of_a_seq_is_found() -> None:
    operations, events, _ = simulate(BODIES)
    report = check(operations, events + [dict(events[0], available=99)], max_operation_bytes=LIMIT)
    assert "seq_conflict" in report.violations


def test_transfer_without_its_credit_breaks_conservation() -> None:
    operations, events, _ = simulate(BODIES)
    events = [e for e in events if e["kind"] != "transfer_in"]
    report = check(operations, events, max_operation_bytes=LIMIT)
    assert {"transfer_not_landed", "conservation"} <= set(report.violations)


def test_table_and_database_differences_are_found() -> None:
    operations, events, tables = simulate(BODIES)
    tables[2] = {"seq": 3, "balances": {"1": {"available": 31, "locked": 0}}}
    db_events = events[:-1]
    db_balances = [{"user_id": 1, "asset": 1, "available": 70, "locked": 0, "seq": 3}]
    report = check(operations, events, tables, db_events, db_balances, max_operation_bytes=LIMIT)
    assert {"table_mismatch", "db_mismatch"} <= set(report.violations)
    assert len(report.violations["db_mismatch"]) == 2  # user 2's last event and balance row are missing


def changelog_of(tables: Dict[int, Any]) -> List[Tuple[Optional[bytes], Optional[bytes]]]:
    """The accounts changelog as the last checkpoint of each user leaves it."""
    return [(str(user).encode(), json.dumps(row).encode()) for user, row in tables.items()]


def test_a_changelog_that_rebuilds_every_account_passes() -> None:
    operations, events, tables = simulate(BODIES)
    older = {1: dict(tables[1], seq=1, balances={"1": {"available": 100, "locked": 0}})}
    records = changelog_of(older) + changelog_of(tables) + changelog_of(tables)  # rewrites of a seq are fine
    report = check(operations, events, tables, accounts_changelog=records, max_operation_bytes=LIMIT)
    assert report.ok, report.summary()
    assert report.counts["changelog_users_checked"] == 2


def test_a_stale_write_after_the_new_owners_is_found_and_so_is_what_a_rebuild_would_keep() -> None:
    """A worker cut off from the group writes user 1's seq 1 after the new owner wrote seq 3."""
    operations, events, tables = simulate(BODIES)
    stale = {1: dict(tables[1], seq=1, balances={"1": {"available": 100, "locked": 0}})}
    records = changelog_of(tables) + changelog_of(stale)
    report = check(operations, events, tables, accounts_changelog=records, max_operation_bytes=LIMIT)
    assert {"changelog_regression", "changelog_mismatch"} == set(report.violations)
    assert report.counts["violation:changelog_mismatch"] == 1  # user 2 rebuilds right


def test_an_account_missing_from_the_changelog_or_deleted_is_found() -> None:
    operations, events, tables = simulate(BODIES)
    records = changelog_of(tables) + [(b"2", None)]
    report = check(operations, events, tables, accounts_changelog=records, max_operation_bytes=LIMIT)
    assert report.violations["changelog_mismatch"] == [
        "user 2: a rebuild gives None, the events (3, {'1': {'available': 20, 'locked': 0}})"
    ]


def test_event_without_operation_is_unexplained() -> None:
    operations, events, _ = simulate(BODIES)
    report = check(operations[1:], events, max_operation_bytes=LIMIT)
    assert "unexplained_event" in report.violations


FULL_PAYEE = [
    {"op_id": "a", "kind": "deposit", "user_id": 1, "asset": 1, "amount": 100},
    {"op_id": "f", "kind": "deposit", "user_id": 2, "asset": 1, "amount": 2**63 - 50},
    {"op_id": "c", "kind": "transfer", "user_id": 1, "to_user_id": 2, "asset": 1, "amount": 60},
]


def test_a_transfer_its_payee_had_no_room_for_passes_once_returned() -> None:
    operations, events, tables = simulate(FULL_PAYEE)
    assert [(e["kind"], e["status"], e["user_id"]) for e in events[2:]] == [
        ("transfer_out", "accepted", 1),
        ("transfer_in", "rejected", 2),
        ("transfer_returned", "accepted", 1),
    ]
    report = check(operations, events, tables, max_operation_bytes=LIMIT)
    assert report.ok, report.summary()


def test_a_refused_transfer_that_never_came_back_is_not_landed() -> None:
    operations, events, _ = simulate(FULL_PAYEE)
    report = check(operations, events[:-1], max_operation_bytes=LIMIT)
    assert "transfer_not_landed" in report.violations and "conservation" in report.violations
