"""The settlement sink's write-then-commit step, with the database writer and the consumer faked at their seams.

The sink is a plain aiokafka consumer (see app/sink/service.py for why it is
not a Faust agent); the integration tests run it against the real broker and database.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Sequence

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from app.core.models import Event
from app.errors import SettlementUnavailable
from app.observability import metrics
from app.sink import service


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
    monkeypatch.setattr(service.asyncio, "sleep", _short_sleep)


_real_sleep = asyncio.sleep


async def _short_sleep(delay: float) -> None:
    await _real_sleep(min(delay, 0.01))


class Record:
    def __init__(self, offset: int, value: bytes, age_s: float = 0.0) -> None:
        self.offset = offset
        self.value = value
        self.timestamp = int((time.time() - age_s) * 1000)


class FakeConsumer:
    """Hands out prepared batches; records commits (or refuses them, like a rebalance does)."""

    def __init__(self, batches: List[Dict[TopicPartition, List[Record]]], refuse_commit: bool = False) -> None:
        self.batches = batches
        self.refuse_commit = refuse_commit
        self.commits: List[Dict[TopicPartition, int]] = []

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: Optional[int] = None) -> Any:
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: Optional[Dict[TopicPartition, int]] = None) -> None:
        if self.refuse_commit:
            raise CommitFailedError("rebalanced")
        assert offsets is not None
        self.commits.append(dict(offsets))


TP0 = TopicPartition("balance.events", 0)
TP1 = TopicPartition("balance.events", 1)


async def test_a_batch_is_written_then_committed_after_its_last_records(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore()
    monkeypatch.setattr(service, "store", fake)
    consumer = FakeConsumer(
        [{TP0: [Record(10, event_bytes(21, 1)), Record(11, event_bytes(21, 2))], TP1: [Record(4, event_bytes(22, 1))]}]
    )
    assert await service.settle_once(consumer) == 3
    assert [(e.user_id, e.seq) for e in fake.written] == [(21, 1), (21, 2), (22, 1)]
    assert consumer.commits == [{TP0: 12, TP1: 5}]
    assert await service.settle_once(consumer) == 0  # nothing polled: nothing written or committed
    assert len(consumer.commits) == 1


async def test_nothing_is_committed_until_the_database_takes_the_batch(
    monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    fake = FakeStore(failures=3)
    monkeypatch.setattr(service, "store", fake)
    failures_before = metrics.value("ubscore_sink_failures_total")
    consumer = FakeConsumer([{TP0: [Record(0, event_bytes(23, 1))]}])
    step = asyncio.ensure_future(service.settle_once(consumer))
    await wait_for(lambda: fake.calls >= 2)
    assert consumer.commits == [] and metrics.value("ubscore_sink_paused") == 1
    assert await step == 1
    assert fake.calls == 4 and consumer.commits == [{TP0: 1}]
    assert metrics.value("ubscore_sink_failures_total") - failures_before == 3
    assert metrics.value("ubscore_sink_paused") == 0


async def test_what_is_not_an_event_is_skipped_and_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore()
    monkeypatch.setattr(service, "store", fake)
    consumer = FakeConsumer([{TP0: [Record(0, b"garbage"), Record(1, event_bytes(24, 1))]}])
    assert await service.settle_once(consumer) == 1
    assert fake.written[0].user_id == 24 and consumer.commits == [{TP0: 2}]


async def test_a_refused_commit_after_a_rebalance_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore()
    monkeypatch.setattr(service, "store", fake)
    refused_before = metrics.value("ubscore_sink_commit_failures_total")
    consumer = FakeConsumer([{TP0: [Record(0, event_bytes(25, 1))]}], refuse_commit=True)
    assert await service.settle_once(consumer) == 1
    assert metrics.value("ubscore_sink_commit_failures_total") - refused_before == 1


async def test_each_settled_event_is_timed_from_its_kafka_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "store", FakeStore())
    count_before = metrics.value("ubscore_sink_latency_seconds_count")
    sum_before = metrics.value("ubscore_sink_latency_seconds_sum")
    slow_before = metrics.value("ubscore_sink_latency_seconds_bucket", le="2.5")
    consumer = FakeConsumer(
        [{TP0: [Record(0, event_bytes(26, 1), age_s=3.0), Record(1, event_bytes(26, 2), age_s=3.0)]}]
    )
    assert await service.settle_once(consumer) == 2
    assert metrics.value("ubscore_sink_latency_seconds_count") - count_before == 2
    assert 6.0 <= metrics.value("ubscore_sink_latency_seconds_sum") - sum_before < 8.0
    assert metrics.value("ubscore_sink_latency_seconds_bucket", le="2.5") == slow_before  # both took over 2.5 s


def test_latest_balances_keeps_highest_seq_per_asset() -> None:
    from app.sink.cql import latest_balances

    def ev(seq: int, asset: int) -> Event:
        return Event.from_json({**json.loads(event_bytes(1, seq)), "asset": asset})

    newest = latest_balances([ev(3, 1), ev(1, 1), ev(2, 2)])
    assert sorted((e.asset, e.seq) for e in newest) == [(1, 3), (2, 2)]
