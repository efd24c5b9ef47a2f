"""Fixtures for agent tests, after faust-streaming's testing guide: test_context() and AsyncMock sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional
from unittest.mock import AsyncMock, MagicMock

import pytest

from app import app
from app.agents import ubscore
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, results
from app.topics import CREDITS, OPERATIONS, credits_topic, dead_letters_topic, events_topic, operations_topic


@pytest.fixture()
def test_app() -> Any:
    app.finalize()
    app.flow_control.resume()
    accounts.data.clear()
    results.data.clear()
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
        key = user_key(credit["payee"])
        await self.put_raw(
            json.dumps(credit).encode(), key, partition_for(key, settings.partitions), topic=CREDITS, offset=offset
        )


@pytest.fixture()
async def ledger(test_app: Any, sent: Sent, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Ledger]:
    async with ubscore.process.test_context() as agent:
        yield Ledger(agent, monkeypatch)
