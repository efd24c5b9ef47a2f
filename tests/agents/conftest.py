"""Fixtures for agent tests, after faust-streaming's testing guide: test_context() and AsyncMock sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple
from unittest.mock import AsyncMock, MagicMock

import pytest
from faust.types import TP
from faust.types.tuples import Message

from app import app
from app.agents import ubscore
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, results
from app.topics import CREDITS, OPERATIONS, credits_topic, dead_letters_topic, events_topic, operations_topic


@pytest.fixture()
def test_app() -> Any:
    app.finalize()
    app.flow_control.resume()
    accounts.data.clear()
    results.data.clear()
    cursors.data.clear()
    return app


@dataclass
class Sent:
    """What the agent produced, decoded, per topic."""

    mocks: Dict[str, AsyncMock] = field(default_factory=dict)

    def values(self, name: str) -> List[Dict[str, Any]]:
        return [json.loads(call.kwargs["value"]) for call in self.mocks[name].call_args_list]

    def keys(self, name: str) -> List[Optional[bytes]]:
        return [call.kwargs["key"] for call in self.mocks[name].call_args_list]


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    record = Sent()
    for name, topic in [
        ("events", events_topic),
        ("credits", credits_topic),
        ("dlq", dead_letters_topic),
        ("operations", operations_topic),
    ]:
        # The agent buffers its outputs behind the table changelogs (send_soon);
        # a direct awaited send would be a bug the tests must see.
        mock = MagicMock()
        monkeypatch.setattr(topic, "send_soon", mock)
        monkeypatch.setattr(topic, "send", AsyncMock(side_effect=AssertionError("use send_soon")))
        record.mocks[name] = mock
    return record


class Ledger:
    """Feeds messages to the ubscore agent as if they came from a topic partition."""

    def __init__(self, agent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.agent = agent
        self.monkeypatch = monkeypatch
        #: Records on "Kafka" that the stream never delivered (see skip), for the hole reader.
        self.skipped: Dict[Tuple[str, int, int], Message] = {}

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

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> List[Message]:
        """Stands in for app.guards.input_gaps.read_range: the skipped records in [start, end)."""
        return [self.skipped[k] for k in sorted(self.skipped) if k[:2] == (topic, partition) and start <= k[2] < end]

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
        await self.agent.put(value, key=key, partition=partition, timestamp=timestamp)

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
