"""Holds as rows of their own through the agent.

Rows written and deleted with the checkpoint's steps, account rows without holds,
an account row written before holds had rows moved to rows on its first write,
expiry and trades on rows, a replay after a kill between the result and account
steps, the asset limit, and records whose size does not grow with open holds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict, List, Optional

import pytest

from app.agents import ubscore
from app.agents.batch import Record
from app.core.hold_rows import hold_row_key
from app.core.ledger import Hold
from app.core.legs import Credit, Expiry
from app.partitioning import user_key
from app.settings import settings
from app.tables import accounts, expiries, expiry_row, holds, results

from .conftest import Ledger, Sent, changelog_of, crash_before_accounts, holds_of
from .test_trades import BASE, BUYER, FEES, QUOTE, SELLER, deliver, open_orders, trade

TS_MS = 1_700_000_000_000


def op(op_id: str, kind: str, user_id: int = 11, asset: int = 1, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": user_id, "asset": asset, **extra}


def account_row(user_id: int = 11) -> Dict[str, Any]:
    row = accounts.get(user_key(user_id))
    assert row is not None
    return dict(row)


def hold_row(hold_id: str, user_id: int = 11) -> Optional[Dict[str, Any]]:
    return holds.get(hold_row_key(user_id, hold_id))


def steps(sent: Sent) -> List[List[Record]]:
    """The checkpoint steps published since the last clear, each as the records of one publish."""
    return sent.publisher.calls


def step_of(sent: Sent, table: Any) -> List[int]:
    """The publishes that carried records of a table's changelog."""
    return [i for i, call in enumerate(steps(sent)) if any(r.topic == changelog_of(table) for r in call)]


async def test_a_lock_writes_its_hold_row_and_the_account_row_only_the_total(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("l1", "lock", amount=60, hold_id="order-1", expires_at_ms=TS_MS + 60_000))
    row = account_row()
    assert "holds" not in row and row["held"] == {"1": 60}
    assert hold_row("order-1") == {
        "asset": 1,
        "remaining": 60,
        "expires_at_ms": TS_MS + 60_000,
        "source": ["operations", 1],
    }
    (written,) = sent.changelog(holds)
    assert written.key == b"11|order-1"
    lock = len(steps(sent)) - 4  # the lock's checkpoint: results and holds, accounts, outputs, cursors
    assert step_of(sent, holds)[-1] == step_of(sent, results)[-1] == lock
    assert step_of(sent, accounts)[-1] == lock + 1


async def test_a_closed_hold_keeps_its_row_until_its_account_is_durable(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("l1", "lock", amount=60, hold_id="order-1"))
    await ledger.submit(**op("u1", "unlock", amount=20, hold_id="order-1"))
    assert hold_row("order-1") == {
        "asset": 1,
        "remaining": 40,
        "source": ["operations", 2],
        "before": {"asset": 1, "remaining": 60},
    }
    sent.publisher.calls.clear()
    await ledger.submit(**op("u2", "unlock", hold_id="order-1"))
    closed, deleted = [
        (i, r.value) for i, call in enumerate(steps(sent)) for r in call if r.topic == changelog_of(holds)
    ]
    assert json.loads(closed[1] or b"") == {"source": ["operations", 3], "before": {"asset": 1, "remaining": 40}}
    assert deleted[1] is None  # the tombstone, with the cursors, once the account is durable
    assert closed[0] < step_of(sent, accounts)[0] < deleted[0]
    assert hold_row("order-1") is None and holds_of(11) == {}
    assert "held" not in account_row() and account_row()["balances"] == {"1": {"available": 100, "locked": 0}}


async def test_an_account_row_that_carries_its_holds_moves_them_to_rows_on_its_first_write(
    ledger: Ledger, sent: Sent
) -> None:
    old = {
        "seq": 3,
        "balances": {"1": {"available": 40, "locked": 60}},
        "holds": {"a": {"asset": 1, "remaining": 25}, "b": {"asset": 1, "remaining": 35, "expires_at_ms": TS_MS + 9}},
        "applied": {"operations": 0},
    }
    accounts.data[user_key(11)] = old
    assert holds_of(11) == {"a": Hold(1, 25), "b": Hold(1, 35, TS_MS + 9)}  # read from the row meanwhile
    await ledger.submit(offset=5, **op("d1", "deposit", amount=1))
    row = account_row()
    assert "holds" not in row and row["held"] == {"1": 60} and row["seq"] == 4
    assert hold_row("a") == {"asset": 1, "remaining": 25, "source": ["operations", 5]}
    assert holds_of(11) == {"a": Hold(1, 25), "b": Hold(1, 35, TS_MS + 9)}
    await ledger.submit(offset=6, **op("u1", "unlock", hold_id="a"))
    assert sent.values("events")[-1]["amount"] == 25
    assert (account_row()["held"], holds_of(11)) == ({"1": 35}, {"b": Hold(1, 35, TS_MS + 9)})
    await ledger.submit(offset=7, **op("u2", "unlock", amount=5))  # anonymous: only what no hold locks, none
    assert sent.values("events")[-1]["reason"] == "insufficient_funds"


async def test_an_expiry_releases_the_hold_row(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("l1", "lock", amount=60, hold_id="gtd", expires_at_ms=TS_MS + 1000))
    await ledger.submit(**op("l2", "lock", amount=30, hold_id="gtc"))
    leg = Expiry(11, "gtd", TS_MS + 1000)
    await ledger.credit_raw(json.dumps(leg.to_json()).encode(), 11)
    event = sent.values("events")[-1]
    assert (event["kind"], event["amount"], event["locked"]) == ("hold_expired", 60, 30)
    assert hold_row("gtd") is None and expiries.get(expiry_row(leg)) is None
    assert (account_row()["held"], holds_of(11)) == ({"1": 30}, {"gtc": Hold(1, 30)})


async def test_a_trade_runs_on_the_hold_rows_of_its_sides(ledger: Ledger, sent: Sent) -> None:
    await open_orders(ledger)
    for i in range(3):  # more open orders on both sides, which no step reads
        await ledger.submit(**op(f"x{i}", "deposit", BUYER, asset=QUOTE, amount=1))
        await ledger.submit(**op(f"y{i}", "lock", BUYER, asset=QUOTE, amount=1, hold_id=f"other-{i}"))
    await ledger.submit(**trade(release_rest={"buyer": True}))
    reserved = hold_row("buy-1", BUYER)
    assert reserved is not None and (reserved["remaining"], reserved["pending"]) == (10_000, 6000)
    seen = await deliver(ledger, sent, 0)
    await deliver(ledger, sent, seen)
    assert holds_of(SELLER) == {"sell-1": Hold(BASE, 2)}
    assert account_row(SELLER)["held"] == {str(BASE): 2}
    assert hold_row("buy-1", BUYER) is None  # filled, the rest released
    assert set(holds_of(BUYER)) == {"other-0", "other-1", "other-2"}
    assert account_row(BUYER)["held"] == {str(QUOTE): 3}
    assert holds_of(FEES) == {} and "held" not in account_row(FEES)


async def test_a_replay_after_a_kill_before_the_accounts_starts_from_the_holds_the_account_knew(
    ledger: Ledger, sent: Sent
) -> None:
    """The hold rows are durable one step before the account: a row ahead reads as the hold it replaced."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    before = accounts.data[user_key(11)]
    await ledger.submit(offset=3, **op("u1", "unlock", amount=20, hold_id="h"))  # then the kill
    first = sent.values("events")[-1]
    crash_before_accounts(sent, 11, before)
    assert hold_row("h") is not None and hold_row("h")["remaining"] == 40  # type: ignore[index]  # ahead
    assert holds_of(11) == {"h": Hold(1, 60, TS_MS + 1000)}  # as the account knows it
    await ledger.submit(offset=3, **op("u1", "unlock", amount=20, hold_id="h"))
    assert sent.values("events") == [first]  # the same decision again, not 20 more
    assert (holds_of(11), account_row()["held"]) == ({"h": Hold(1, 40, TS_MS + 1000)}, {"1": 40})


async def test_a_replay_in_another_interleaving_reads_the_row_ahead_as_before(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    before = accounts.data[user_key(11)]
    await ledger.submit(offset=3, **op("u1", "unlock", hold_id="h"))  # closes it, then the kill
    crash_before_accounts(sent, 11, before)
    leg = json.dumps(Expiry(11, "h", TS_MS + 1000).to_json()).encode()
    await ledger.credit_raw(leg, 11, offset=1)  # this time the expiry comes first: all 60 released
    await ledger.submit(offset=3, **op("u1", "unlock", hold_id="h"))
    assert [(e["kind"], e["status"], e["reason"], e["seq"]) for e in sent.values("events")] == [
        ("hold_expired", "accepted", None, 3),
        ("unlock", "rejected", "unknown_hold", 4),
    ]
    assert hold_row("h") is None and holds_of(11) == {} and "held" not in account_row()
    assert account_row()["balances"] == {"1": {"available": 100, "locked": 0}}


async def test_an_expiry_that_found_no_hold_leaves_the_account_unmarked_so_a_replay_is_no_late_application(
    ledger: Ledger, sent: Sent
) -> None:
    """Found by the simulator: a do-nothing expiry that recorded its offset made its redelivery a late
    application, whose closed row the old account read as applied once a kill lost the new account."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    before = accounts.data[user_key(11)]
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    crash_before_accounts(sent, 11, before)  # the lock's row is ahead of its account
    leg = json.dumps(Expiry(11, "h", TS_MS + 1000).to_json()).encode()
    await ledger.credit_raw(leg, 11, offset=1)  # no hold as the account knows it: nothing to release
    assert "credits" not in account_row()["applied"]
    await ledger.submit(offset=2, **op("l1", "lock", amount=60, hold_id="h", expires_at_ms=TS_MS + 1000))
    locked = accounts.data[user_key(11)]
    await ledger.credit_raw(leg, 11, offset=1)  # redelivered: the hold is there now, and is released
    assert sent.values("events")[-1]["kind"] == "hold_expired"
    crash_before_accounts(sent, 11, locked)  # the release's closed row is durable, its account is not
    assert (holds_of(11), account_row()["held"]) == ({"h": Hold(1, 60, TS_MS + 1000)}, {"1": 60})


async def test_an_asset_more_than_the_limit_is_refused(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ubscore, "settings", replace(settings, max_assets_per_account=2))
    for asset in (1, 2, 3):
        await ledger.submit(**op(f"d{asset}", "deposit", asset=asset, amount=5))
    event = sent.values("events")[-1]
    assert (event["status"], event["reason"]) == ("rejected", "too_many_assets")
    assert set(account_row()["balances"]) == {"1", "2"}
    credit = Credit(12, 11, "t1", 3, 5, TS_MS)
    await ledger.credit(credit.to_json())
    refused = sent.values("events")[-1]
    assert (refused["kind"], refused["reason"]) == ("transfer_in", "too_many_assets")
    assert sent.values("credits")[-1] == {**credit.returned_to_payer().to_json(), "returned": True}


def user_records(sent: Sent, user_id: int) -> List[Record]:
    """The records of the last checkpoint's steps that concern one user (changelogs, outputs)."""
    prefix = str(user_id).encode()
    return [r for call in steps(sent) for r in call if r.key is not None and r.key.startswith(prefix)]


async def test_an_operation_writes_the_same_records_whatever_the_number_of_open_holds(
    ledger: Ledger, sent: Sent
) -> None:
    """A user with 5,000 open holds: after the first write moved them to rows, a lock writes what it writes for 10."""
    sizes = {}
    for user_id, count in ((11, 10), (12, 5000)):
        carried = {f"h{i:05d}": {"asset": 1, "remaining": 1} for i in range(count)}
        balances = {"1": {"available": 100, "locked": count}}
        accounts.data[user_key(user_id)] = {"seq": 1, "balances": balances, "holds": carried}
        await ledger.submit(**op(f"m{user_id}", "deposit", user_id, amount=1))  # moves the holds to rows
        assert len([r for r in user_records(sent, user_id) if r.topic == changelog_of(holds)]) == count
        sent.publisher.calls.clear()
        await ledger.submit(**op(f"o{user_id}", "lock", user_id, amount=10, hold_id="new"))
        records = user_records(sent, user_id)
        sizes[count] = sorted((r.topic, len(r.value or b"")) for r in records)
        assert len(json.dumps(account_row(user_id))) < 200
        assert account_row(user_id)["held"] == {"1": count + 10}
        sent.publisher.calls.clear()
    assert [topic for topic, _ in sizes[10]] == [topic for topic, _ in sizes[5000]]
    assert all(abs(a - b) <= 8 for (_, a), (_, b) in zip(sizes[10], sizes[5000], strict=True))  # digits differ
