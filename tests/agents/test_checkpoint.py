"""The checkpoint alone: what reaches the tables, and when, if Kafka acknowledges or refuses."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, List

import pytest

from app.agents import checkpoint
from app.agents.batch import Batch
from app.agents.waiters import waiters
from app.exit_codes import ExitCode
from app.frame import ownership
from app.tables import accounts, cursors, results

from .conftest import Sent, changelog_of


class Exited(BaseException):  # like os._exit, never caught by a handler of Exception
    """os._exit, made catchable for the test."""


@pytest.fixture()
def exits(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    codes: List[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(checkpoint.os, "_exit", fake_exit)
    return codes


def refuse_from_call(sent: Sent, monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Kafka acknowledges the first ``calls`` publishes of the checkpoint and refuses the rest."""
    original = sent.publisher.publish

    async def refusing(records: Any) -> List[int]:
        if len(sent.publisher.calls) >= calls:
            raise RuntimeError("leader not available")
        return await original(records)

    monkeypatch.setattr(sent.publisher, "publish", refusing)


def a_batch() -> Batch:
    batch = Batch()
    batch.put(results, 3, b"11/d1", {"event": {"op_id": "d1"}})
    batch.put(accounts, 3, b"11", {"seq": 1})
    batch.put(cursors, 3, b"balance.operations:3", 7)
    batch.send("balance.events", b"11", b'{"op_id":"d1"}')
    return batch


async def test_rows_reach_the_tables_after_their_changelog_then_outputs_then_the_cursor(
    test_app: Any, sent: Sent
) -> None:
    await checkpoint.checkpoint(a_batch())
    topics = [[record.topic for record in call] for call in sent.publisher.calls]
    assert topics == [
        [changelog_of(results)],
        [changelog_of(accounts)],
        ["balance.events"],
        [changelog_of(cursors)],
    ]
    assert results[b"11/d1"] == {"event": {"op_id": "d1"}}
    assert accounts[b"11"] == {"seq": 1} and cursors[b"balance.operations:3"] == 7
    (row,) = sent.changelog(accounts)
    assert (row.partition, json.loads(row.value)) == (3, {"seq": 1})


async def test_refused_results_leave_every_table_untouched_and_the_worker_exits(
    test_app: Any, sent: Sent, exits: List[int]
) -> None:
    sent.publisher.fail_next = RuntimeError("not enough replicas")
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert exits == [ExitCode.CHECKPOINT_FAILED]
    assert (
        results.get(b"11/d1") is None and accounts.get(b"11") is None and cursors.get(b"balance.operations:3") is None
    )
    assert sent.publisher.calls == []


async def test_refused_accounts_leave_results_only_and_nothing_is_sent(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state rule 2 allows: a result without its account, which the redelivery applies again."""
    refuse_from_call(sent, monkeypatch, 1)  # results go through, the accounts are refused
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert results[b"11/d1"] == {"event": {"op_id": "d1"}}
    assert accounts.get(b"11") is None and cursors.get(b"balance.operations:3") is None
    assert sent.records("events") == []


async def test_refused_outputs_leave_the_state_and_the_worker_exits(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_from_call(sent, monkeypatch, 2)  # both state steps go through, the outputs are refused
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert exits == [ExitCode.CHECKPOINT_FAILED]
    assert accounts[b"11"] == {"seq": 1}
    # The cursor does not claim the input: the hole reader must read it back if Faust skips it.
    assert cursors.get(b"balance.operations:3") is None


async def test_a_refused_cursor_leaves_everything_else_done_and_the_worker_exits(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input is then redelivered or read back as a hole, and answered by resending its result."""
    refuse_from_call(sent, monkeypatch, 3)  # state and outputs go through, the cursor is refused
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert exits == [ExitCode.CHECKPOINT_FAILED]
    assert accounts[b"11"] == {"seq": 1} and len(sent.records("events")) == 1
    assert cursors.get(b"balance.operations:3") is None


async def test_a_request_waiting_for_a_result_is_woken_once_the_row_is_written(test_app: Any, sent: Sent) -> None:
    with waiters.watching(b"11/d1") as written, waiters.watching(b"11/other") as unrelated:
        await checkpoint.checkpoint(a_batch())
        assert written.is_set() and not unrelated.is_set()
        assert results[b"11/d1"] == {"event": {"op_id": "d1"}} and accounts[b"11"] == {"seq": 1}
    assert len(waiters) == 0


async def test_refused_accounts_wake_nobody_though_the_result_is_written(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answered client must find its account: no wake-up before the accounts are written."""
    refuse_from_call(sent, monkeypatch, 1)  # results go through, the accounts are refused
    with waiters.watching(b"11/d1") as written:
        with pytest.raises(Exited):
            await checkpoint.checkpoint(a_batch())
        assert results[b"11/d1"] == {"event": {"op_id": "d1"}} and not written.is_set()


def test_a_row_changed_twice_in_a_batch_is_written_once() -> None:
    batch = Batch()
    batch.put(accounts, 3, b"11", {"seq": 1})
    batch.put(accounts, 3, b"11", {"seq": 2})
    assert batch.rows_of(accounts) == [(3, b"11", {"seq": 2})]
    assert batch.get(accounts, 3, b"11") == {"seq": 2}


# --- rule 5: no write lands after the partitions may have moved ---------------------------------


async def test_a_checkpoint_past_the_ownership_bound_writes_nothing_and_the_worker_exits(
    test_app: Any, sent: Sent, exits: List[int], vouching: ownership.Ownership
) -> None:
    vouching.clock.now = vouching.last_heard + vouching.bound_s + 0.1  # type: ignore[attr-defined]
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert exits == [ExitCode.OWNERSHIP_LAPSED]
    assert sent.publisher.calls == [] and results.get(b"11/d1") is None and accounts.get(b"11") is None


async def test_a_write_not_acknowledged_while_vouched_for_exits_without_waiting_for_it(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accounts' write hangs (a cut link): the worker exits once the coordinator's last word stops vouching."""
    tracker = ownership.Ownership(0.3)  # the real clock: the bound passes 0.3 s after the last word
    tracker.heard()
    monkeypatch.setattr(ownership, "tracker", tracker)
    original = sent.publisher.publish

    async def hanging(records: Any) -> List[int]:
        if sent.publisher.calls:
            await asyncio.sleep(60)
        return await original(records)

    monkeypatch.setattr(sent.publisher, "publish", hanging)
    started = time.monotonic()
    with pytest.raises(Exited):
        await checkpoint.checkpoint(a_batch())
    assert exits == [ExitCode.OWNERSHIP_LAPSED]
    assert time.monotonic() - started < 2.0
    assert results[b"11/d1"] == {"event": {"op_id": "d1"}} and accounts.get(b"11") is None
    assert sent.records("events") == []


async def test_a_slow_write_goes_on_while_heartbeats_keep_vouching(
    test_app: Any, sent: Sent, exits: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write slower than the bound (a leader election) is waited for as long as the coordinator answers."""
    tracker = ownership.Ownership(0.3)
    tracker.heard()
    monkeypatch.setattr(ownership, "tracker", tracker)
    original = sent.publisher.publish

    async def slow(records: Any) -> List[int]:
        for _ in range(8):  # 0.8 s, with a heartbeat answered every 0.1 s
            await asyncio.sleep(0.1)
            tracker.heard()
        return await original(records)

    monkeypatch.setattr(sent.publisher, "publish", slow)
    await checkpoint.checkpoint(a_batch())
    assert exits == [] and accounts[b"11"] == {"seq": 1} and len(sent.records("events")) == 1
