"""The agent's firewall: no single message, however built, stops the partition or escapes as an exception."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from app.agents import ubscore
from app.core.ledger import Account, Balance
from app.frame import failpoints
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors
from app.topics import OPERATIONS
from tests.hostile import INVALID, UNTIED, VALID, Catalogue

from .conftest import Ledger, Sent

USER, PAYEE = 11, 12


def op(op_id: str, kind: str = "deposit", amount: int = 100, **extra: Any) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "user_id": USER, "asset": 1, "amount": amount, **extra}


def balance(user_id: int = USER) -> Balance:
    return Account.from_json(accounts.get(user_key(user_id))).balance(1)


async def test_every_hostile_message_is_owed_its_answer_and_the_next_operation_is_applied(
    ledger: Ledger, sent: Sent
) -> None:
    """The generated catalogue, each case followed by a deposit on the same partition."""
    cases = Catalogue(USER, PAYEE).cases()
    assert {case.owed(settings.max_body_bytes) for case in cases} == {VALID, INVALID, UNTIED}
    partition = partition_for(user_key(USER), settings.partitions)
    for number, case in enumerate(cases):
        letters, events = len(sent.values("dlq")), len(sent.values("events"))
        await ledger.put_raw(case.raw, user_key(USER), partition)  # type: ignore[arg-type]
        owed = case.owed(settings.max_body_bytes)
        new_letters = sent.values("dlq")[letters:]
        new_events = sent.values("events")[events:]
        assert len(new_letters) == (0 if owed == VALID else 1), case.label
        assert len(new_events) == (0 if owed == UNTIED else 1), case.label
        if owed != UNTIED:
            assert new_events[0]["op_id"] == case.op_id, case.label
        if owed == INVALID:
            assert new_events[0]["status"] == "rejected", case.label
        await ledger.submit(**op(f"good-{number}", amount=1))
        last = sent.values("events")[-1]
        assert (last["op_id"], last["status"]) == (f"good-{number}", "accepted"), case.label
    assert [e["seq"] for e in sent.values("events")] == list(range(1, len(sent.values("events")) + 1))


async def test_unforeseen_error_in_the_decision_is_a_rejection_and_a_dead_letter(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ubscore.apply_operation

    def fragile(account: Account, operation: Any, ts: int, hold_used: bool, **limits: Any) -> Any:
        if operation.op_id == "boom":
            raise KeyError("a bug no handler expects")
        return real(account, operation, ts, hold_used, **limits)

    monkeypatch.setattr(ubscore, "apply_operation", fragile)
    await ledger.submit(**op("d1", amount=50))
    await ledger.submit(**op("boom", "withdraw", amount=20))
    await ledger.submit(**op("d2", amount=5))
    events = sent.values("events")
    assert [(e["op_id"], e["status"], e["reason"], e["seq"]) for e in events] == [
        ("d1", "accepted", None, 1),
        ("boom", "rejected", "processing_failed", 2),
        ("d2", "accepted", None, 3),
    ]
    assert (events[1]["available"], events[1]["amount"], events[1]["kind"]) == (50, 20, "withdraw")
    (letter,) = sent.values("dlq")
    assert letter["error"]["error"] == "processing_failed"
    assert "KeyError" in letter["error"]["message"]
    assert balance() == Balance(55, 0)


async def test_redelivered_failure_is_answered_with_its_first_result(ledger: Ledger, sent: Sent) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ubscore, "apply_operation", lambda *args: 1 / 0)
        await ledger.submit(offset=5, **op("boom"))
    await ledger.submit(offset=5, **op("boom"))  # Kafka redelivers it after a crash
    first, second = sent.values("events")
    assert first == second and first["reason"] == "processing_failed"
    assert balance() == Balance(0, 0)


async def test_failure_never_replaces_a_stored_result_of_an_earlier_message(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.submit(offset=1, **op("d1", amount=10))
    monkeypatch.setattr(ubscore, "apply_operation", lambda *args, **kwargs: 1 / 0)
    await ledger.submit(offset=2, **op("d1", amount=10))  # a client retry: answered from the stored result
    first, second = sent.values("events")
    assert first == second and first["status"] == "accepted"
    assert balance() == Balance(10, 0)


async def test_a_failure_on_replay_replaces_the_first_attempts_row_and_is_the_one_result(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the result write and before the account write, d1 is decided again; if that raises,
    its stale row must not stay: the failure is its one result, and retries get it."""
    await ledger.submit(offset=1, **op("d1", amount=10))
    sent.publisher.calls.clear()  # the crash came before the outputs: nothing was announced
    accounts.data[user_key(USER)] = Account().to_json()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ubscore, "apply_operation", lambda *args, **kwargs: 1 / 0)
        await ledger.submit(offset=1, **op("d1", amount=10))
    await ledger.submit(offset=2, **op("d1", amount=10))  # a client retry
    first, second = sent.values("events")
    assert first == second and first["reason"] == "processing_failed" and first["seq"] == 1
    assert sent.values("dlq")[0]["error"]["error"] == "processing_failed"
    assert balance() == Balance(0, 0)


async def test_unforeseen_error_while_reading_is_a_dead_letter(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(raw: bytes, limit: int) -> Any:
        if b"boom" in raw:
            raise MemoryError("not a subclass of anything the agent names")
        return real(raw, limit)

    real = ubscore.read_operation
    monkeypatch.setattr(ubscore, "read_operation", broken)
    await ledger.submit(**op("boom"))
    await ledger.submit(**op("d1"))
    assert [e["op_id"] for e in sent.values("events")] == ["d1"]
    assert sent.values("dlq")[0]["error"]["error"] == "processing_failed"


async def test_unforeseen_error_on_a_credit_leg_is_only_a_dead_letter(ledger: Ledger, sent: Sent) -> None:
    """A credit has no rejection: its payer has paid. The letter is what an operator acts on."""
    credit = {"payer": 99, "payee": PAYEE, "op_id": "t1", "asset": 1, "amount": 5, "ts": 1}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ubscore, "apply_credit", lambda account, credit: {}["missing"])
        await ledger.credit(credit)
    assert sent.values("events") == []
    assert sent.values("dlq")[0]["error"]["error"] == "processing_failed"
    await ledger.credit(dict(credit, op_id="t2"))
    assert balance(PAYEE) == Balance(5, 0)


async def test_injected_failpoint_raises_in_the_decision_once(
    ledger: Ledger, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failpoints, "_armed", ("raise_in_decision", 2))
    monkeypatch.setattr(failpoints, "_passes", 0)
    for number in range(4):
        await ledger.submit(**op(f"d{number}", amount=1))
    assert [e["reason"] for e in sent.values("events")] == [None, "processing_failed", None, None]
    assert "InjectedFailure" in sent.values("dlq")[0]["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"payer": 99, "payee": PAYEE, "op_id": "t", "asset": 1, "amount": -5, "ts": 1},
        {"payer": 99, "payee": PAYEE, "op_id": "t", "asset": 1, "amount": "5", "ts": 1},
        {"payer": 99, "payee": PAYEE, "op_id": "t", "asset": 1, "amount": 5.9, "ts": 1},
        {"payer": 99, "payee": PAYEE, "op_id": "t", "asset": 1, "amount": 5, "ts": 1, "bonus": 1},
        {"payer": 99, "payee": PAYEE, "op_id": "t b", "asset": 1, "amount": 5, "ts": 1},
        [1, 2],
    ],
)
async def test_malformed_credit_leg_is_refused_not_coerced(ledger: Ledger, sent: Sent, body: Any) -> None:
    await ledger.credit_raw(json.dumps(body).encode(), PAYEE)
    assert sent.values("events") == []
    assert sent.values("dlq")[0]["error"]["error"] == "invalid_credit"
    assert accounts.get(user_key(PAYEE)) is None


async def test_cursor_moves_past_a_dead_lettered_message(ledger: Ledger, sent: Sent) -> None:
    """So neither the hole filler nor the progress watch comes back to it."""
    partition = partition_for(user_key(USER), settings.partitions)
    await ledger.put_raw(b'{"amount": ' + b"9" * 5000 + b"}", user_key(USER), partition, offset=70)
    assert cursors.get(f"{OPERATIONS}:{partition}".encode()) == 70
    await ledger.submit(offset=71, **op("d1"))
    assert [e["op_id"] for e in sent.values("events")] == ["d1"]
