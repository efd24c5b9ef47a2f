"""The settlement sink under test_context(): the database writer is faked at its seam."""

from __future__ import annotations

import asyncio
import json
from typing import Any, List, Sequence

import pytest

from app import metrics
from app.agents import settlement
from app.errors import SettlementUnavailable
from app.models import Event


def event_bytes(user_id: int, seq: int) -> bytes:
    return json.dumps(
        {
            "op_id": f"o{seq}",
            "kind": "deposit",
            "user_id": user_id,
            "asset": 1,
            "amount": 1,
            "status": "accepted",
            "reason": None,
            "available": seq,
            "locked": 0,
            "seq": seq,
            "ts": 1_700_000_000_000,
            "counterparty": None,
        }
    ).encode()


class FakeStore:
    """Stands in for CqlStore.write_events; can refuse the first N calls like a database outage."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.written: List[Event] = []

    async def write_events(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise SettlementUnavailable("database down")
        self.written.extend(events)


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture()
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settlement.asyncio, "sleep", _short_sleep)


_real_sleep = asyncio.sleep


async def _short_sleep(delay: float) -> None:
    await _real_sleep(min(delay, 0.01))


async def test_sink_writes_every_event_in_batches(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore()
    monkeypatch.setattr(settlement, "store", fake)
    async with settlement.settle.test_context() as agent:
        for seq in range(1, 6):
            await agent.put(event_bytes(21, seq), key=b"21", wait=False)
        await wait_for(lambda: len(fake.written) == 5)
    assert [e.seq for e in fake.written] == [1, 2, 3, 4, 5]


async def test_sink_retries_a_batch_until_the_database_takes_it(
    test_app: Any, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    fake = FakeStore(failures=3)
    monkeypatch.setattr(settlement, "store", fake)
    failures_before = metrics.value("ubscore_sink_failures_total")
    async with settlement.settle.test_context() as agent:
        await agent.put(event_bytes(22, 1), key=b"22", wait=False)
        await wait_for(lambda: len(fake.written) == 1)
    assert fake.calls == 4
    assert metrics.value("ubscore_sink_failures_total") - failures_before == 3
    assert metrics.value("ubscore_sink_paused") == 0


async def test_sink_skips_what_is_not_an_event(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore()
    monkeypatch.setattr(settlement, "store", fake)
    async with settlement.settle.test_context() as agent:
        await agent.put(b"garbage", key=b"23", wait=False)
        await agent.put(event_bytes(23, 1), key=b"23", wait=False)
        await wait_for(lambda: len(fake.written) == 1)
    assert fake.written[0].user_id == 23


def test_latest_balances_keeps_highest_seq_per_asset() -> None:
    from app.cql import latest_balances

    def ev(seq: int, asset: int) -> Event:
        return Event.from_json({**json.loads(event_bytes(1, seq)), "asset": asset})

    newest = latest_balances([ev(3, 1), ev(1, 1), ev(2, 2)])
    assert sorted((e.asset, e.seq) for e in newest) == [(1, 3), (2, 2)]
