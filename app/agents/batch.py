"""One batch of ledger input: the table rows it changed and the records it will send, held in memory.

The agent decides every message against this overlay, so a user's second
operation in a batch sees the account the first one left, exactly as if they
had been applied one by one. While a batch is being checkpointed the agent
fills the next one, whose reads fall through to the batch in flight and then to
the tables. Nothing here reaches RocksDB or Kafka: the checkpoint
(app.agents.checkpoint) publishes the rows to the changelogs first and only then
writes them locally and sends the records, so what a batch decided exists
either in Kafka or nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from faust.types import EventT, TableT
from faust.types.tuples import Message

from app.partitioning import partition_for
from app.settings import settings
from app.tables import read

RowKey = Tuple[str, int, bytes]


@dataclass(frozen=True)
class Record:
    """One Kafka record to produce: topic, partition (always explicit), key and value."""

    topic: str
    partition: int
    key: Optional[bytes]
    value: Optional[bytes]


@dataclass
class Batch:
    """The overlay of one batch: rows by (table, partition, key), then outputs in the order they were made."""

    #: The batch being checkpointed while this one fills; its rows are not in the tables yet.
    previous: Optional["Batch"] = None
    rows: Dict[RowKey, Any] = field(default_factory=dict)
    outputs: List[Record] = field(default_factory=list)
    #: The input events, acknowledged to Faust after the checkpoint.
    events: List[EventT] = field(default_factory=list)
    #: Records the hole filler read straight from Kafka; acknowledged with the events.
    filled: List[Message] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        """Input messages this batch decided."""
        return len(self.events) + len(self.filled)

    def input_timestamps(self) -> List[float]:
        """The Kafka timestamps (seconds) of the inputs, for the apply latency."""
        return [event.message.timestamp for event in self.events] + [message.timestamp for message in self.filled]

    def get(self, table: TableT, partition: int, key: bytes) -> Any:
        """The row as this batch left it, else as the batch in flight left it, else as the table holds it."""
        row = (table.name, partition, key)
        if row in self.rows:
            return self.rows[row]
        if self.previous is not None and row in self.previous.rows:
            return self.previous.rows[row]
        return read(table, partition, key)

    def wrote(self, table: TableT, partition: int, key: bytes) -> bool:
        """Whether this batch changed the row already (its changelog record is not out yet)."""
        return (table.name, partition, key) in self.rows

    def put(self, table: TableT, partition: int, key: bytes, value: Any) -> None:
        """Change a row (None deletes it); only the last value per key reaches the changelog."""
        self.rows[(table.name, partition, key)] = value

    def send(self, topic: str, key: Optional[bytes], value: bytes, partition: Optional[int] = None) -> None:
        """Queue an output; keyed records go to their key's partition unless one is given."""
        if partition is None:
            partition = partition_for(key, settings.partitions) if key is not None else 0
        self.outputs.append(Record(topic, partition, key, value))

    def rows_of(self, table: TableT) -> List[Tuple[int, bytes, Any]]:
        """The changed rows of one table, as (partition, key, value)."""
        return [(partition, key, value) for (name, partition, key), value in self.rows.items() if name == table.name]
