"""In-memory Kafka: partitioned logs with the broker's append time, committed offsets, and retention.

Only what the ledger's guarantees rest on is modelled: per partition, records in
offset order, each stamped with the simulated clock when it is appended
(``message.timestamp.type=LogAppendTime``, so a replay sees the time the first
attempt saw); offsets committed by the consumer group; a log start that
retention moves forward, one segment prefix at a time. Nothing is lost once
appended, nothing appears that was not appended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from faust.types import TP
from faust.types.tuples import Message

#: Kafka's timestamp type of a record stamped by the broker.
LOG_APPEND_TIME = 1

TopicPartition = Tuple[str, int]


class Clock:
    """The simulated wall clock, in milliseconds; it only moves when the scheduler says so."""

    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def advance(self, ms: int) -> None:
        """Move forward; time never goes back."""
        self.now_ms += max(0, ms)


@dataclass
class Log:
    """One topic partition: records by offset (offset = index), and the first one retention kept."""

    topic: str
    partition: int
    records: List[Message] = field(default_factory=list)
    start: int = 0

    @property
    def end(self) -> int:
        """The offset the next record will get (the high watermark: every record is fully replicated)."""
        return len(self.records)

    def append(self, key: Optional[bytes], value: Optional[bytes], now_ms: int) -> int:
        """Append one record stamped with the broker's time; its offset."""
        offset = len(self.records)
        self.records.append(
            Message(
                topic=self.topic,
                partition=self.partition,
                offset=offset,
                timestamp=now_ms / 1000.0,
                timestamp_type=LOG_APPEND_TIME,
                headers=None,
                key=key,
                value=value,
                checksum=None,
                tp=TP(self.topic, self.partition),
            )
        )
        return offset

    def read(self, offset: int) -> Message:
        """The record at ``offset``; reading below the log start is a bug of the caller."""
        assert self.start <= offset < self.end, (self.topic, self.partition, offset, self.start, self.end)
        return self.records[offset]

    def retained(self) -> Iterator[Message]:
        """Every record retention has kept, in offset order."""
        return iter(self.records[self.start :])

    def deletable_upto(self, now_ms: int, retention_ms: int) -> int:
        """The highest log start retention may move to now: every record before it is past retention."""
        offset = self.start
        while offset < self.end and _timestamp_ms(self.records[offset]) + retention_ms <= now_ms:
            offset += 1
        return offset


class Cluster:
    """Every topic partition of the simulated broker, and the ledger group's committed offsets."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.logs: Dict[TopicPartition, Log] = {}
        self.committed: Dict[TopicPartition, int] = {}

    def log(self, topic: str, partition: int) -> Log:
        """The log of a topic partition, empty until something is appended."""
        tp = (topic, partition)
        found = self.logs.get(tp)
        if found is None:
            found = self.logs[tp] = Log(topic, partition)
        return found

    def append(self, topic: str, partition: int, key: Optional[bytes], value: Optional[bytes]) -> int:
        """Produce one record, acknowledged at once; its offset."""
        return self.log(topic, partition).append(key, value, self.clock.now_ms)

    def records(self, topic: str) -> List[Message]:
        """Every retained record of a topic, partition by partition, each in offset order (as the verifier reads)."""
        found: List[Message] = []
        for (name, _), log in sorted(self.logs.items()):
            if name == topic:
                found.extend(log.retained())
        return found


def _timestamp_ms(message: Message) -> int:
    return int(round(message.timestamp * 1000))
