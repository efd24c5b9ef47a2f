"""The ledger worker: the agent's real per-message code, the checkpoint's steps in their order, and what a kill leaves.

Real code: ``app.agents.ubscore.handle`` decides every input record into an
``app.agents.batch.Batch``, whose reads fall through the batch in flight to the
tables, exactly as in the worker. Modelled here, mirroring the real modules:

- ``take`` (app.agents.ubscore.take): the cursor of the record's partition moves
  with the record. The simulated consumer never skips a record, so the hole
  reader has nothing to do and is left out.
- The checkpoint (app.agents.checkpoint.checkpoint): ``STEPS`` below, the one
  place that says the order. A table step produces its rows to the changelog and,
  once every record is acknowledged, writes them to the local store; the outputs
  step produces events, legs, moved operations and dead letters; after the last
  step the batch's input is acknowledged. The agent fills the next batch meanwhile.
- RocksDB: per (table, partition) rows of JSON bytes, each result row with the time
  it was written locally, and the changelog offset the store has applied.
- A kill: the open batch and the batch in flight are gone, with whatever prefix of
  the step in hand Kafka had acknowledged per partition. The new process reopens
  the store and reads the changelog tail, or rebuilds from the changelog's log
  start (no local files); its consumer starts at the committed offsets.
- The expiry timer (app.agents.expiry.send_due): due rows of the local expiries
  table, in key order, each sent as a leg to its user's partition, again after
  ``RESEND_AFTER_S`` while the row stays; its memory of what it sent dies with
  the process.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from faust.types import TableT
from faust.types.tuples import Message

from app.agents.batch import Batch, Record
from app.agents.expiry import RESEND_AFTER_S
from app.agents.ubscore import handle
from app.core.legs import Expiry
from app.guards.input_gaps import cursor_key
from app.partitioning import user_key
from app.tables import cursors
from app.topics import CREDITS, OPERATIONS
from tests.simulator.kafka import Cluster, TopicPartition
from tests.simulator.trace import Trace
from tests.simulator.world import Hooks, World

try:  # holds as rows of their own (issue 23); older trees keep them in the account row
    from app.core.hold_rows import closed_hold
except ImportError:  # pragma: no cover - depends on the tree under test
    closed_hold = None  # type: ignore[assignment]

CHANGELOG_SUFFIX = "-changelog"


@dataclass(frozen=True)
class Step:
    """One checkpoint step: table rows to their changelogs, or the batch's outputs."""

    name: str
    tables: Tuple[str, ...] = ()
    outputs: bool = False
    #: Also delete the rows of holds the batch closed (their accounts are durable by then).
    closed_holds: bool = False


#: app.agents.checkpoint.checkpoint, in its order (rules 1-4 of its docstring): each step starts only once
#: Kafka acknowledged every record of the one before. A table no step names goes with the accounts.
#: (Trees before holds had rows of their own have no ``holds`` rows: those parts do nothing there.)
STEPS: Tuple[Step, ...] = (
    Step("results", ("results", "holds")),
    Step("accounts", ("accounts", "expiries")),
    Step("outputs", outputs=True),
    Step("cursors", ("cursors",), closed_holds=True),
)
_NAMED = frozenset(name for step in STEPS for name in step.tables)
_STATE_STEP = "accounts"


def changelog(table: str) -> str:
    """The simulated changelog topic of a table."""
    return table + CHANGELOG_SUFFIX


def encode(value: Any) -> bytes:
    """JSON as the checkpoint writes it (app.agents.checkpoint._encode)."""
    return json.dumps(value, separators=(",", ":")).encode()


class Store:
    """RocksDB of one worker's data directory: rows per (table, partition), and how far each changelog is applied."""

    def __init__(self) -> None:
        self.rows: Dict[Tuple[str, int], Dict[bytes, bytes]] = {}
        #: When each result row was last written here: RocksDB's TTL counts from it.
        self.written: Dict[Tuple[str, int], Dict[bytes, int]] = {}
        self.applied: Dict[Tuple[str, int], int] = {}

    def read(self, table: TableT, partition: int, key: bytes) -> Any:
        """app.tables.read: one row of one partition, decoded; None when absent."""
        raw = self.rows.get((table.name, partition), {}).get(key)
        return None if raw is None else json.loads(raw)

    def apply(self, table: str, partition: int, message: Message, now_ms: int) -> None:
        """One changelog record, as Table.apply_changelog_batch writes it (None deletes)."""
        rows = self.rows.setdefault((table, partition), {})
        key = message.key
        assert key is not None
        if message.value is None:
            rows.pop(key, None)
            self.written.get((table, partition), {}).pop(key, None)
        else:
            rows[key] = message.value
            self.written.setdefault((table, partition), {})[key] = now_ms
        self.applied[(table, partition)] = message.offset + 1


@dataclass
class Flight:
    """The batch being checkpointed, its input, and the next step to run."""

    batch: Batch
    inputs: List[Message]
    number: int
    step: int = 0


@dataclass
class Stats:
    """What a run did, for the summary and the trace."""

    delivered: int = 0
    redelivered: int = 0
    batches: int = 0
    kills: int = 0
    kills_mid_step: int = 0
    rebuilds: int = 0
    expiry_legs: int = 0
    rows_expired: int = 0
    raised: int = 0
    counts: Dict[str, int] = field(default_factory=dict)


class Worker:
    """One worker owning every partition, across its restarts (the store is its data directory)."""

    def __init__(self, world: World, cluster: Cluster, trace: Trace, rng: random.Random, hooks: Hooks) -> None:
        self.world = world
        self.cluster = cluster
        self.trace = trace
        self.rng = rng
        self.stats = Stats()
        self.store = Store()
        self.inputs: List[TopicPartition] = [
            (topic, partition) for partition in range(world.partitions) for topic in (OPERATIONS, CREDITS)
        ]
        self._input_logs = [(tp, cluster.log(*tp)) for tp in self.inputs]
        #: The highest offset ever handed to the agent per input partition: below it, a record is redelivered.
        self.high: Dict[TopicPartition, int] = {tp: 0 for tp in self.inputs}
        self.current: Optional[Message] = None
        self._batches = 0
        self.hooks = hooks
        hooks.read = self.store.read
        self._start_process()

    # -- the process -------------------------------------------------------------------------------------------

    def _start_process(self) -> None:
        committed = self.cluster.committed
        self.position: Dict[TopicPartition, int] = {tp: committed.get(tp, 0) for tp in self.inputs}
        self.acked: Dict[TopicPartition, int] = dict(self.position)
        self.open = Batch()
        self.open_inputs: List[Message] = []
        self.flight: Optional[Flight] = None
        self.sent: Dict[bytes, float] = {}

    def kill(self, mid_step: bool) -> None:
        """SIGKILL: the batches in memory are gone; inside a step, Kafka kept a prefix per partition of it."""
        flight = self.flight
        where = "idle" if flight is None else f"batch {flight.number} before step {STEPS[flight.step].name}"
        if mid_step and flight is not None:
            kept = self._publish(STEPS[flight.step], flight.batch, partial=True)
            where = f"batch {flight.number} inside step {STEPS[flight.step].name}, acknowledged {kept}"
            self.stats.kills_mid_step += 1
        self.stats.kills += 1
        lost = len(self.open_inputs) + (len(flight.inputs) if flight is not None else 0)
        self.trace.fault(f"kill: {where}; {lost} inputs in memory lost")
        self.restart(rebuild=self.rng.random() < self.world.faults.wipe)

    def restart(self, rebuild: bool) -> None:
        """A new process on its data directory (reads the changelog tail), or on none (rebuilt from the log start)."""
        now = self.cluster.clock.now_ms
        if rebuild:
            self.store = Store()
            self.stats.rebuilds += 1
        for (topic, partition), log in sorted(self.cluster.logs.items()):
            if not topic.endswith(CHANGELOG_SUFFIX):
                continue
            table = topic[: -len(CHANGELOG_SUFFIX)]
            start = max(self.store.applied.get((table, partition), 0), log.start)
            for offset in range(start, log.end):
                self.store.apply(table, partition, log.read(offset), now)
        self.hooks.read = self.store.read
        self._start_process()
        self.trace.fault(f"restart: {'rebuilt from the changelogs' if rebuild else 'local files reopened'}")

    # -- input ---------------------------------------------------------------------------------------------------

    def deliverable(self) -> List[TopicPartition]:
        """Input partitions with a record for the agent, unless the open batch is full (the agent then waits)."""
        if len(self.open_inputs) >= self.world.batch_limit:
            return []
        position = self.position
        return [tp for tp, log in self._input_logs if position[tp] < len(log.records)]

    def deliver(self, tp: TopicPartition) -> None:
        """The next record of one input partition, into the open batch (app.agents.ubscore.take)."""
        offset = self.position[tp]
        message = self.cluster.log(*tp).read(offset)
        self.position[tp] = offset + 1
        redelivered = offset < self.high[tp]
        self.high[tp] = max(self.high[tp], offset + 1)
        self.stats.delivered += 1
        self.stats.redelivered += redelivered
        if self.trace.verbose:
            self.trace.note(f"take {tp[0]}/{tp[1]}@{offset}{' (again)' if redelivered else ''}: {message.value!r}")
        batch = self.open
        position = cursor_key(message.topic, message.partition)
        last = batch.get(cursors, message.partition, position)
        self.current = message
        handle(batch, message)
        self.current = None
        if last is None or message.offset > last:
            batch.put(cursors, message.partition, position, message.offset)
        self.open_inputs.append(message)

    def is_redelivery(self) -> bool:
        """Whether the record being handled was handed to the agent before (by this process or a dead one)."""
        message = self.current
        if message is None:
            return False
        return message.offset < self.high[(message.topic, message.partition)] - 1

    # -- the checkpoint ------------------------------------------------------------------------------------------

    def can_checkpoint(self) -> bool:
        """A checkpoint is in flight, or one can start: none is, and the open batch holds input."""
        return self.flight is not None or bool(self.open_inputs)

    def checkpoint_step(self) -> None:
        """Start a checkpoint of the open batch, or run the next step of the one in flight."""
        if self.flight is None:
            self._start_checkpoint()
            return
        flight = self.flight
        self._publish(STEPS[flight.step], flight.batch, partial=False)
        flight.step += 1
        if flight.step == len(STEPS):
            self._finish(flight)

    def after_results(self) -> bool:
        """The batch in flight has its result rows acknowledged and nothing else (the ``after_results`` failpoint)."""
        return self.flight is not None and STEPS[self.flight.step - 1].name == "results" and self.flight.step == 1

    def contended(self) -> bool:
        """The batch in flight holds records of both input streams of one partition."""
        if self.flight is None:
            return False
        seen: Dict[int, str] = {}
        for message in self.flight.inputs:
            if seen.setdefault(message.partition, message.topic) != message.topic:
                return True
        return False

    def _start_checkpoint(self) -> None:
        """Checkpoints._checkpoint_open_batch: the open batch goes in flight, the next one reads through it."""
        batch = self.open
        self._batches += 1
        self.flight = Flight(batch, self.open_inputs, self._batches)
        self.open = Batch()
        self.open.previous = batch
        batch.previous = None
        self.open_inputs = []
        self.stats.batches += 1
        if self.trace.verbose:
            self.trace.note(f"checkpoint {self._batches}: {len(self.flight.inputs)} inputs")

    def _finish(self, flight: Flight) -> None:
        if self.open.previous is flight.batch:
            self.open.previous = None  # its rows are in the tables now
        for message in flight.inputs:
            tp = (message.topic, message.partition)
            self.acked[tp] = max(self.acked[tp], message.offset + 1)
        self.flight = None
        if self.trace.verbose:
            self.trace.note(f"checkpoint {flight.number} done, input acknowledged")

    def _publish(self, step: Step, batch: Batch, partial: bool) -> Dict[str, str]:
        """Produce one step's records; all acknowledged, or (a kill) a prefix of each partition's."""
        records = self._records(step, batch)
        by_tp: Dict[TopicPartition, List[Record]] = {}
        for record in records:
            by_tp.setdefault((record.topic, record.partition), []).append(record)
        kept: Dict[str, str] = {}
        appended: List[Tuple[TopicPartition, int]] = []
        for tp, group in by_tp.items():
            count = self._prefix(len(group)) if partial else len(group)
            if partial:
                kept[f"{tp[0]}/{tp[1]}"] = f"{count}/{len(group)}"
            for record in group[:count]:
                appended.append((tp, self.cluster.append(record.topic, record.partition, record.key, record.value)))
        if not partial and step.tables:
            now = self.cluster.clock.now_ms
            for (topic, partition), offset in appended:
                table = topic[: -len(CHANGELOG_SUFFIX)]
                self.store.apply(table, partition, self.cluster.log(topic, partition).read(offset), now)
        return kept

    def _prefix(self, size: int) -> int:
        """How many of a partition's records of the step Kafka had acknowledged when the worker died."""
        roll = self.rng.random()
        if roll < 0.3:
            return 0
        if roll < 0.6:
            return size
        return self.rng.randint(0, size)

    def _records(self, step: Step, batch: Batch) -> List[Record]:
        if step.outputs:
            return list(batch.outputs)
        names = list(step.tables)
        if step.name == _STATE_STEP:
            names += [name for (name, _, _) in batch.rows if name not in _NAMED and name not in names]
        records = [
            Record(changelog(name), partition, key, None if value is None else encode(value))
            for name in names
            for (table, partition, key), value in batch.rows.items()
            if table == name
        ]
        if step.closed_holds and closed_hold is not None:
            records += [
                Record(changelog("holds"), partition, key, None)
                for (table, partition, key), value in batch.rows.items()
                if table == "holds" and closed_hold(value)
            ]
        return records

    def commit(self) -> None:
        """Faust's committer: every acknowledged offset becomes the group's committed offset."""
        self.cluster.committed.update(self.acked)

    def quiet(self) -> bool:
        """Nothing to take, nothing in memory, nothing in flight."""
        if self.flight is not None or self.open_inputs:
            return False
        return all(self.position[tp] >= len(log.records) for tp, log in self._input_logs)

    def at_stake(self) -> bool:
        """Whether a kill now could lose anything: input in memory or in flight, or acknowledged but not committed."""
        if self.flight is not None or self.open_inputs:
            return True
        return any(self.acked[tp] != self.cluster.committed.get(tp, 0) for tp in self.inputs)

    # -- the expiry timer ----------------------------------------------------------------------------------------

    def expiry_timer(self) -> int:
        """app.agents.expiry.send_due over the local expiries table; how many legs it sent."""
        now_ms = self.cluster.clock.now_ms
        monotonic = now_ms / 1000.0
        bound = f"{now_ms + 1:015d}".encode()  # every key of a time <= now_ms sorts below it
        seen: Dict[bytes, bool] = {}
        sent = 0
        for partition in range(self.world.partitions):
            rows = self.store.rows.get(("expiries", partition), {})
            for key in sorted(rows):
                if key >= bound:
                    break
                expiry = Expiry.from_json(json.loads(rows[key]))
                seen[key] = True
                if monotonic - self.sent.get(key, -RESEND_AFTER_S) < RESEND_AFTER_S:
                    continue
                self.cluster.append(CREDITS, partition, user_key(expiry.user_id), encode(expiry.to_json()))
                self.sent[key] = monotonic
                sent += 1
                if self.trace.verbose:
                    self.trace.note(f"expiry timer: leg for {expiry.user_id}/{expiry.hold_id} on partition {partition}")
        for key in [key for key in self.sent if key not in seen]:
            del self.sent[key]
        self.stats.expiry_legs += sent
        return sent

    # -- retention -----------------------------------------------------------------------------------------------

    def compact_results(self, chance: float) -> int:
        """RocksDB's TTL at a compaction: each result row written at least the TTL ago may go; how many went."""
        now = self.cluster.clock.now_ms
        gone = 0
        for (table, partition), written in self.store.written.items():
            if table != "results":
                continue
            rows = self.store.rows[(table, partition)]
            for key, at in list(written.items()):
                if now >= at + self.world.ttl_ms and self.rng.random() < chance:
                    del written[key]
                    rows.pop(key, None)
                    gone += 1
        self.stats.rows_expired += gone
        return gone

    def delete_old_changelog(self) -> None:
        """The broker's retention on the results changelog: a prefix of records past ``retention.ms`` goes."""
        retention = self.world.changelog_retention_ms
        if retention is None:
            return
        now = self.cluster.clock.now_ms
        for (topic, partition), log in sorted(self.cluster.logs.items()):
            if topic != changelog("results"):
                continue
            upto = log.deletable_upto(now, retention)
            if upto > log.start:
                log.start = self.rng.randint(log.start, upto)
                self.trace.fault(f"retention: results changelog {partition} starts at {log.start} of {log.end}")
