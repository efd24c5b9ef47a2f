"""Fixtures for agent tests: Faust's test_context() for the agent, a recording publisher for Kafka."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

import pytest
from faust.types import TP, TableT
from faust.types.tuples import Message
from yarl import URL

from app import app
from app.agents import checkpoint, ubscore
from app.agents.batch import Record
from app.core.ledger import Hold
from app.frame import ownership
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, expiries, holds, open_holds, results
from app.topics import CREDITS, DEAD_LETTERS, EVENTS, OPERATIONS
from app.web import routing


@pytest.fixture()
def test_app() -> Any:
    app.finalize()
    app.flow_control.resume()
    accounts.data.clear()
    results.data.clear()
    cursors.data.clear()
    expiries.data.clear()
    holds.data.clear()
    return app


class StillClock:
    """A monotonic clock that moves only when told: ownership deadlines without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def vouching(monkeypatch: pytest.MonkeyPatch) -> ownership.Ownership:
    """This worker has just heard from its group coordinator and its clock stands still: it owns its partitions."""
    tracker = ownership.Ownership(settings.ownership_bound_s, clock=StillClock())
    tracker.heard()
    monkeypatch.setattr(ownership, "tracker", tracker)
    return tracker


def holds_of(user_id: int) -> Dict[str, Hold]:
    """A user's open holds as the tables hold them (each a row of its own), by hold id."""
    return dict(open_holds(user_id)[1])


class Producer:
    """Kafka's producer as the views call it: what was sent, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: List[Tuple[str, bytes]] = []

    async def send(self, topic: str, key: Any, value: bytes, *args: Any) -> "asyncio.Future[Any]":
        self.sent.append((topic, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(partition=-1, offset=len(self.sent)))  # no partition: no wait estimate
        return done


TOPICS = {"events": EVENTS, "credits": CREDITS, "dlq": DEAD_LETTERS, "operations": OPERATIONS}


class RecordingPublisher:
    """Kafka for the checkpoint in agent tests: every record kept in order, offsets counted per partition."""

    def __init__(self) -> None:
        self.calls: List[List[Record]] = []
        self.fail_next: Optional[Exception] = None
        self._next: Dict[Tuple[str, int], int] = defaultdict(int)

    async def publish(self, records: Sequence[Record]) -> List[int]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        offsets = []
        for record in records:
            offsets.append(self._next[(record.topic, record.partition)])
            self._next[(record.topic, record.partition)] += 1
        self.calls.append(list(records))
        return offsets

    async def stop(self) -> None:
        pass


@dataclass
class Sent:
    """What the agent produced, per output topic, decoded."""

    publisher: RecordingPublisher

    def records(self, name: str) -> List[Record]:
        return [record for call in self.publisher.calls for record in call if record.topic == TOPICS[name]]

    def values(self, name: str) -> List[Dict[str, Any]]:
        return [json.loads(record.value) for record in self.records(name)]

    def keys(self, name: str) -> List[Optional[bytes]]:
        return [record.key for record in self.records(name)]

    def changelog(self, table: TableT) -> List[Record]:
        return [record for call in self.publisher.calls for record in call if record.topic == changelog_of(table)]


def changelog_of(table: TableT) -> str:
    return table.changelog_topic.get_topic_name()


def crash_before_accounts(sent: Sent, user_id: int, before: Any) -> None:
    """A kill after the batch's first checkpoint step: the account as the changelog held it before the batch,
    its hold rows as step 1 left them (step 4 deletes those of holds it closed), none of its outputs sent."""
    accounts.data[user_key(user_id)] = before
    first_step = next(call for call in reversed(sent.publisher.calls) if any(_in(results, r) for r in call))
    for record in first_step:
        if _in(holds, record) and record.value is not None:
            holds.data[record.key] = json.loads(record.value)
    sent.publisher.calls.clear()


def _in(table: TableT, record: Record) -> bool:
    return record.topic == changelog_of(table)


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    publisher = RecordingPublisher()
    monkeypatch.setattr(checkpoint, "publisher", publisher)
    return Sent(publisher)


class Ledger:
    """Feeds messages to the ubscore agent as if they came from a topic partition."""

    def __init__(self, agent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.agent = agent
        self.monkeypatch = monkeypatch
        #: Records on "Kafka" that the stream never delivered (see skip), for the hole reader.
        self.skipped: Dict[Tuple[str, int, int], Message] = {}
        #: Every hole read: (topic, partition, start, end, limit).
        self.reads: List[Tuple[str, int, Optional[int], int, int]] = []

    def skip(self, operation: Dict[str, Any], offset: int, timestamp: float = 1_700_000_000.0) -> None:
        """An operation that sits on its partition at ``offset`` but that Faust never delivers."""
        key = user_key(operation["user_id"])
        partition = partition_for(key, settings.partitions)
        self.skipped[(OPERATIONS, partition, offset)] = Message(
            topic=OPERATIONS,
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            timestamp_type=0,
            headers=None,
            key=key,
            value=json.dumps(operation).encode(),
            checksum=None,
            tp=TP(OPERATIONS, partition),
        )

    async def read_range(
        self, topic: str, partition: int, start: Optional[int], end: int, limit: int = 1_000_000
    ) -> List[Message]:
        """Stands in for app.guards.input_gaps.read_range: the first ``limit`` skipped records in [start, end)."""
        first = start or 0
        self.reads.append((topic, partition, start, end, limit))
        found = [self.skipped[k] for k in sorted(self.skipped) if k[:2] == (topic, partition) and first <= k[2] < end]
        return found[:limit]

    async def put_raw(
        self,
        value: bytes,
        key: Optional[bytes],
        partition: int,
        topic: str = OPERATIONS,
        timestamp: float = 1_700_000_000.0,
        offset: Optional[int] = None,
    ) -> None:
        """One message; without ``offset`` each put gets the next one, as on a real partition."""
        self.monkeypatch.setattr(self.agent, "_get_strtopic", lambda channel: topic)
        if offset is not None:
            self.agent.sent_offset = offset
        event = await self.agent.put(value, key=key, partition=partition, timestamp=timestamp)
        # put() returns once the stream has the message; the agent acknowledges it after its checkpoint.
        async with asyncio.timeout(10):
            while not event.message.acked:  # noqa: ASYNC110 - Faust sets a flag, there is no event to wait on
                await asyncio.sleep(0.001)

    async def submit(self, timestamp: float = 1_700_000_000.0, offset: Optional[int] = None, **operation: Any) -> None:
        key = user_key(operation["user_id"])
        await self.put_raw(
            json.dumps(operation).encode(),
            key,
            partition_for(key, settings.partitions),
            timestamp=timestamp,
            offset=offset,
        )

    async def credit(self, credit: Dict[str, Any], offset: Optional[int] = None) -> None:
        await self.credit_raw(json.dumps(credit).encode(), credit["payee"], offset)

    async def credit_raw(self, value: bytes, payee: int, offset: Optional[int] = None) -> None:
        key = user_key(payee)
        await self.put_raw(value, key, partition_for(key, settings.partitions), topic=CREDITS, offset=offset)


@pytest.fixture()
async def ledger(test_app: Any, sent: Sent, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Ledger]:
    async with ubscore.process.test_context() as agent:
        ledger = Ledger(agent, monkeypatch)
        # The test agent numbers offsets across all partitions, so holes appear that hold nothing.
        monkeypatch.setattr(ubscore, "read_range", ledger.read_range)
        yield ledger


class Request:
    """What the routed views read of a request: its query, path and headers (none: no API key, a gateway open)."""

    def __init__(self, path_and_query: str) -> None:
        url = URL(path_and_query)
        self.query = url.query
        self.path = url.path
        self.headers: Dict[str, str] = {}


@pytest.fixture()
def here(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This worker owns every user: routed views answer here."""
    monkeypatch.setattr(routing, "owner_of", lambda user_id: URL(settings.canonical_url))
    monkeypatch.setattr(routing, "is_local", lambda owner: True)
    return test_app
