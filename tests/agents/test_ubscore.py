"""The ubscore agent under Faust's test_context(): table state and what it sends."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional

import pytest

from app.agents import ubscore
from app.core.ledger import Account, Balance, operation_key
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, results
from app.topics import CREDITS, EVENTS, OPERATIONS

from .conftest import Ledger, Sent, changelog_of


def balance_of(user_id: int, asset: int = 1) -> Balance:
    return Account.from_json(accounts.get(user_key(user_id))).balance(asset)


def op(op_id: str, kind: str, user_id: int = 11, asset: int = 1, amount: Any = 100, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": user_id, "asset": asset, "amount": amount, **extra}


async def test_deposit_updates_table_and_emits_one_event(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=250))
    assert balance_of(11) == Balance(250, 0)
    events = sent.values("events")
    assert events == [
        {
            "op_id": "d1",
            "kind": "deposit",
            "user_id": 11,
            "asset": 1,
            "amount": 250,
            "status": "accepted",
            "reason": None,
            "available": 250,
            "locked": 0,
            "seq": 1,
            "ts": 1_700_000_000_000,
            "counterparty": None,
            "hold_id": None,
        }
    ]
    assert sent.keys("events") == [b"11"]
    assert results.get(operation_key(11, "d1").encode())["event"]["seq"] == 1


async def test_withdraw_rejected_when_funds_insufficient(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=50))
    await ledger.submit(**op("w1", "withdraw", amount=51))
    assert balance_of(11) == Balance(50, 0)
    last = sent.values("events")[-1]
    assert (last["status"], last["reason"], last["seq"]) == ("rejected", "insufficient_funds", 2)


async def test_retried_op_id_is_applied_once_and_answered_with_first_result(ledger: Ledger, sent: Sent) -> None:
    window = settings.results_retention_s
    await ledger.submit(offset=1, **op("d1", "deposit", amount=70))
    await ledger.submit(offset=2, timestamp=1_700_000_000.0 + window - 1, **op("d1", "deposit", amount=70))
    assert balance_of(11) == Balance(70, 0)
    first, second = sent.values("events")
    assert first == second


async def test_an_op_id_used_again_after_its_window_is_a_new_operation_on_every_worker(
    ledger: Ledger, sent: Sent
) -> None:
    """The window is decided from the log (the row's time and the message's), not from when RocksDB wrote the row."""
    window = settings.results_retention_s
    await ledger.submit(offset=1, **op("d1", "deposit", amount=70))
    await ledger.submit(offset=2, timestamp=1_700_000_000.0 + window, **op("d1", "deposit", amount=70))
    assert balance_of(11) == Balance(140, 0)
    assert [e["seq"] for e in sent.values("events")] == [1, 2]
    await ledger.submit(offset=1, **op("d1", "deposit", amount=70))  # redeliveries apply nothing again
    await ledger.submit(offset=2, timestamp=1_700_000_000.0 + window, **op("d1", "deposit", amount=70))
    assert balance_of(11) == Balance(140, 0)
    events = sent.values("events")
    assert {e["seq"] for e in events} == {1, 2}
    assert all(e == next(f for f in events if f["seq"] == e["seq"]) for e in events)  # copies, no conflict


async def test_retry_rewrites_account_and_result_for_the_changelog(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit"))
    await ledger.submit(**op("d1", "deposit"))
    assert [record.key for record in sent.changelog(accounts)] == [b"11", b"11"]
    assert [record.key for record in sent.changelog(results)] == [operation_key(11, "d1").encode()] * 2


async def test_redelivery_after_account_rollback_is_applied_again(ledger: Ledger, sent: Sent) -> None:
    """A kill between the result write and the account write (or a recovery that rolled the
    account back to an older changelog entry) must re-apply the operation, not skip it."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=10))
    await ledger.submit(offset=2, **op("d2", "deposit", amount=5))
    first_d2 = sent.values("events")[-1]
    # Roll the account back past d2 behind the agent's back, as such a recovery would.
    rolled_back = Account(seq=1, balances={1: Balance(10, 0)}, applied={"operations": 1})
    accounts.data[user_key(11)] = rolled_back.to_json()
    await ledger.submit(offset=2, **op("d2", "deposit", amount=5))  # Kafka redelivers offset 2
    assert balance_of(11) == Balance(15, 0)
    assert sent.values("events")[-1] == first_d2


async def test_credit_taking_a_lost_seq_does_not_hide_the_operation(ledger: Ledger, sent: Sent) -> None:
    """The interleaving a crash test found: after a rollback a credit leg arrives before the
    redelivered operation and takes the seq that the operation's unpublished result holds."""
    await ledger.submit(offset=1, **op("d1", "deposit", amount=100))
    await ledger.submit(offset=2, **op("w1", "withdraw", amount=30))  # seq 2, result row stays
    accounts.data[user_key(11)] = Account(seq=1, balances={1: Balance(100, 0)}, applied={"operations": 1}).to_json()
    await ledger.credit({"payer": 99, "payee": 11, "op_id": "t9", "asset": 1, "amount": 5, "ts": 1}, offset=0)
    await ledger.submit(offset=2, **op("w1", "withdraw", amount=30))  # redelivered
    assert balance_of(11) == Balance(75, 0)
    assert [e["seq"] for e in sent.values("events")][-2:] == [2, 3]


async def test_transfer_debits_payer_and_sends_credit_keyed_by_payee(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("t1", "transfer", amount=40, to_user_id=12))
    assert balance_of(11) == Balance(60, 0)
    assert sent.keys("credits") == [b"12"]
    assert sent.values("credits") == [
        {"payer": 11, "payee": 12, "op_id": "t1", "asset": 1, "amount": 40, "ts": 1_700_000_000_000}
    ]
    assert sent.values("events")[-1]["kind"] == "transfer_out"


async def test_credit_leg_lands_once_on_payee(ledger: Ledger, sent: Sent) -> None:
    credit = {"payer": 11, "payee": 12, "op_id": "t1", "asset": 1, "amount": 40, "ts": 1_700_000_000_000}
    await ledger.credit(credit)
    await ledger.credit(credit)
    assert balance_of(12) == Balance(40, 0)
    first, second = sent.values("events")
    assert first == second
    assert (first["kind"], first["user_id"], first["counterparty"], first["seq"]) == ("transfer_in", 12, 11, 1)


async def test_redelivered_transfer_resends_its_credit_leg(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("t1", "transfer", amount=40, to_user_id=12))
    await ledger.submit(**op("t1", "transfer", amount=40, to_user_id=12))
    assert balance_of(11) == Balance(60, 0)
    assert len(sent.values("credits")) == 2


async def test_poison_message_goes_to_dead_letters_and_next_is_processed(ledger: Ledger, sent: Sent) -> None:
    key = user_key(11)
    await ledger.put_raw(b"\x00not json", key, partition_for(key, settings.partitions))
    await ledger.submit(**op("d1", "deposit", amount=5))
    (letter,) = sent.values("dlq")
    assert letter["error"]["error"] == "invalid_json"
    assert letter["value"].endswith("not json")
    assert balance_of(11) == Balance(5, 0)


async def test_invalid_field_tied_to_user_gets_rejected_event_and_dead_letter(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(**op("bad", "deposit", amount=1.5))
    (event,) = sent.values("events")
    assert (event["status"], event["reason"], event["seq"], event["amount"]) == ("rejected", "invalid_amount", 1, None)
    (letter,) = sent.values("dlq")
    assert letter["error"]["field"] == "amount"


async def test_operation_without_user_goes_only_to_dead_letters(ledger: Ledger, sent: Sent) -> None:
    await ledger.put_raw(
        json.dumps({"op_id": "x", "kind": "deposit"}).encode(), b"11", partition_for(b"11", settings.partitions)
    )
    assert sent.values("events") == []
    assert sent.values("dlq")[0]["error"]["field"] == "user_id"


@pytest.mark.parametrize("key", [None, b"someone else", b"11"])
async def test_operation_off_its_users_partition_is_moved_there_by_number(
    ledger: Ledger, sent: Sent, key: Optional[bytes]
) -> None:
    """No key, another key, or another partitioner (librdkafka's CRC32): the copy goes to the owner."""
    home = partition_for(user_key(11), settings.partitions)
    raw = json.dumps(op("d1", "deposit")).encode()
    await ledger.put_raw(raw, key, (home + 1) % settings.partitions)
    (moved,) = sent.records("operations")
    assert (moved.key, moved.value, moved.partition) == (b"11", raw, home)
    assert sent.values("events") == [] and sent.values("dlq") == []
    assert accounts.get(b"11") is None


async def test_operation_on_its_users_partition_is_applied_whatever_its_key(ledger: Ledger, sent: Sent) -> None:
    await ledger.put_raw(json.dumps(op("d1", "deposit")).encode(), None, partition_for(b"11", settings.partitions))
    assert sent.values("operations") == []
    assert balance_of(11) == Balance(100, 0)


async def test_moved_copies_are_deduplicated_like_retries(ledger: Ledger, sent: Sent) -> None:
    """A crash before the input commit moves an operation twice; it is applied once."""
    await ledger.submit(offset=1, **op("d1", "deposit"))
    await ledger.submit(offset=2, **op("d1", "deposit"))
    assert balance_of(11) == Balance(100, 0)
    first, second = sent.values("events")
    assert first == second


async def test_forged_credit_shape_on_public_topic_is_not_a_credit(ledger: Ledger, sent: Sent) -> None:
    forged = {"payer": 11, "payee": 12, "op_id": "t1", "asset": 1, "amount": 10**6, "ts": 1}
    await ledger.put_raw(json.dumps(forged).encode(), b"12", partition_for(b"12", settings.partitions))
    assert accounts.get(b"12") is None
    assert sent.values("events") == []
    assert sent.values("dlq")[0]["error"]["field"] == "user_id"


async def test_checkpoint_publishes_results_then_accounts_then_outputs_then_cursors(ledger: Ledger, sent: Sent) -> None:
    """The order a crash must preserve: a result before the account that records it, outputs after both,
    and the input's cursor last, so that it never claims a record whose outputs a crash lost."""
    await ledger.submit(**op("d1", "deposit", amount=100))
    await ledger.submit(**op("t1", "transfer", amount=40, to_user_id=12))
    topics = [sorted({record.topic for record in call}) for call in sent.publisher.calls]
    state = [changelog_of(results)], [changelog_of(accounts)]
    cursor = [changelog_of(cursors)]
    assert topics == [*state, [EVENTS], cursor, *state, sorted([CREDITS, EVENTS]), cursor]


async def test_message_delivered_out_of_order_is_applied_once(ledger: Ledger, sent: Sent) -> None:
    """A record fetched before a rebalance's seek may come first; the skipped ones come after."""
    await ledger.submit(offset=257, **op("late-257", "deposit", amount=1))
    await ledger.submit(offset=251, **op("late-251", "deposit", amount=10))
    await ledger.submit(offset=257, **op("late-257", "deposit", amount=1))  # the seek re-reads it
    assert balance_of(11) == Balance(11, 0)
    assert [e["op_id"] for e in sent.values("events")] == ["late-257", "late-251", "late-257"]


async def test_records_faust_skipped_are_read_back_and_applied_first(ledger: Ledger, sent: Sent) -> None:
    """A record missing between two delivered ones is applied before the later one (fault-injection finding 9)."""
    await ledger.submit(offset=40, **op("h1", "deposit", amount=100))
    ledger.skip(op("h2", "withdraw", amount=30), offset=41)
    ledger.skip(op("h3", "lock", amount=20), offset=42)
    await ledger.submit(offset=43, **op("h4", "withdraw", amount=50))
    assert [e["op_id"] for e in sent.values("events")] == ["h1", "h2", "h3", "h4"]
    assert [e["seq"] for e in sent.values("events")] == [1, 2, 3, 4]
    assert balance_of(11) == Balance(0, 20)


async def test_a_batch_behaves_like_its_messages_one_by_one(ledger: Ledger, sent: Sent, monkeypatch: Any) -> None:
    """Messages queued while a checkpoint is in flight are decided together, each seeing the ones before."""
    gate = asyncio.Event()
    original = sent.publisher.publish

    async def held(records: Any) -> List[int]:
        await gate.wait()
        return await original(records)

    monkeypatch.setattr(sent.publisher, "publish", held)
    first = asyncio.ensure_future(ledger.submit(**op("b1", "deposit", amount=100)))
    await asyncio.sleep(0.05)  # b1's checkpoint is now waiting at the gate
    later = [
        op("b2", "withdraw", amount=30),
        op("b3", "transfer", amount=50, to_user_id=12),
        op("b4", "withdraw", amount=30),  # 20 left: rejected
        op("b2", "withdraw", amount=30),  # a retry inside the batch: answered, not applied
    ]
    for operation in later:
        key = user_key(11)
        await ledger.agent.put(
            json.dumps(operation).encode(), key=key, partition=partition_for(key, settings.partitions), wait=False
        )
    gate.set()
    await first
    await ledger.submit(**op("b5", "deposit", user_id=13, amount=1))  # waits until all before it are through
    events = sent.values("events")
    assert [(e["op_id"], e["status"], e["seq"]) for e in events if e["user_id"] == 11] == [
        ("b1", "accepted", 1),
        ("b2", "accepted", 2),
        ("b3", "accepted", 3),
        ("b4", "rejected", 4),
        ("b2", "accepted", 2),
    ]
    (credit,) = sent.values("credits")
    await ledger.credit(credit)
    assert balance_of(11) == Balance(20, 0) and balance_of(12) == Balance(50, 0)
    # One account row per user per checkpoint, however many of its messages the batch held.
    for call in sent.publisher.calls:
        keys = [record.key for record in call if record.topic == changelog_of(accounts)]
        assert len(keys) == len(set(keys))
    assert len([c for c in sent.publisher.calls if any(r.topic == changelog_of(accounts) for r in c)]) < 7


async def test_a_checkpoint_taking_the_batch_during_a_hole_read_loses_nothing(
    ledger: Ledger, sent: Sent, monkeypatch: Any
) -> None:
    """The open batch may be taken by the checkpoint while the skipped records are read from Kafka.

    What the message decides must then land in the next batch, not in the one already being
    checkpointed: there its rows would miss the changelog while its event was still sent.
    """
    gate = asyncio.Event()
    original = sent.publisher.publish

    async def held(records: Any) -> List[int]:
        await gate.wait()
        return await original(records)

    async def slow_read(topic: str, partition: int, start: Optional[int], end: int, limit: int) -> Any:
        gate.set()  # the first checkpoint completes and the second takes the open batch meanwhile
        await asyncio.sleep(0.1)
        return await ledger.read_range(topic, partition, start, end, limit)

    monkeypatch.setattr(sent.publisher, "publish", held)
    monkeypatch.setattr(ubscore, "read_range", slow_read)
    key = user_key(11)
    partition = partition_for(key, settings.partitions)

    monkeypatch.setattr(ledger.agent, "_get_strtopic", lambda channel: OPERATIONS)

    async def put(operation: Dict[str, Any], offset: int) -> None:
        ledger.agent.sent_offset = offset
        await ledger.agent.put(json.dumps(operation).encode(), key=key, partition=partition, wait=False)

    await put(op("g1", "deposit", amount=100), 60)  # its checkpoint waits at the gate
    await asyncio.sleep(0.05)
    await put(op("g2", "withdraw", amount=10), 61)  # waits in the open batch
    ledger.skip(op("g3", "withdraw", amount=20), offset=62)
    await put(op("g4", "withdraw", amount=30), 63)  # reveals the hole
    await ledger.submit(**op("g5", "deposit", user_id=13, amount=1))  # waits for all before it
    assert [e["op_id"] for e in sent.values("events") if e["user_id"] == 11] == ["g1", "g2", "g3", "g4"]
    assert balance_of(11) == Balance(40, 0)
    for op_id in ("g1", "g2", "g3", "g4"):
        assert results.get(operation_key(11, op_id).encode()) is not None, op_id
