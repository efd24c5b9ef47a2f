"""One seed's run: the scheduler that decides, from the seed alone, what happens next.

A run is a few epochs, each a retention window apart. In an epoch clients send
their operations while the scheduler, one step at a time, picks among: a client
sends, the agent takes the next record of any input partition with one (so the
two streams of a partition interleave in every order), the checkpoint starts or
runs its next step (so batches end anywhere), the group commits what was
acknowledged, the expiry timer runs, the clock moves; and, while anything is at
stake, a kill at a step boundary or inside a step, and the ``raise_in_decision``
failpoint (mostly on redelivered records). Between epochs the pipeline drains,
more than the retention window passes, RocksDB's TTL and the changelog's
retention remove what they may, the worker may restart (on its files or without
them), and expired holds are released. After the last epoch everything drains
with no more faults, the holds are expired, and the invariants are checked.

Nothing here reads the wall clock or an unseeded generator, and nothing iterates
a set: the seed replays the run exactly.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import List, Mapping, Optional

from app.agents.expiry import RESEND_AFTER_S
from app.partitioning import user_key
from app.topics import OPERATIONS
from tests.simulator.checks import Violations, check_run
from tests.simulator.kafka import Clock, Cluster
from tests.simulator.trace import Trace
from tests.simulator.worker import Stats, Worker
from tests.simulator.workload import Workload
from tests.simulator.world import START_MS, Hooks, World, patched

#: Steps of faults after an epoch's last operation, before the drain goes on without them.
FAULTY_TAIL_STEPS = 100
#: A drain that takes more steps than this never ends: a violation of its own.
DRAIN_LIMIT = 200_000
#: Rounds of "timer, drain, wait for the timer's resend" to release every expired hold.
EXPIRY_ROUNDS = 8


@dataclass
class Outcome:
    """What one seed's run found, and how it got there."""

    seed: int
    world: World
    violations: Violations
    stats: Stats
    faults: List[str]
    lines: List[str]
    #: A hash of every record and row (verbose runs only): equal for two runs of one seed.
    digest: str = ""

    @property
    def ok(self) -> bool:
        """No invariant was violated."""
        return self.violations.total == 0


class Simulation:
    """The scheduler of one seed."""

    def __init__(
        self,
        seed: int,
        size: int,
        verbose: bool = False,
        epochs: Optional[int] = None,
        faults: Optional[Mapping[str, float]] = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.world = World.draw(seed, self.rng, size, epochs, faults)
        self.clock = Clock(START_MS + self.rng.randint(0, 10**8))
        self.cluster = Cluster(self.clock)
        self.trace = Trace(self.clock, verbose)
        self.hooks = Hooks()
        self.hooks.should_raise = self._should_raise
        self.workload = Workload(self.world, self.rng)
        self.epoch_starts: List[int] = []
        self.faulty = False
        self.problems = Violations()
        self._worker: Optional[Worker] = None

    @property
    def worker(self) -> Worker:
        """The worker (one process after another on one data directory)."""
        assert self._worker is not None
        return self._worker

    def run(self) -> Outcome:
        """Every epoch, the final drain and expiry, then the checks."""
        with patched(self.world, self.hooks):
            self._worker = Worker(self.world, self.cluster, self.trace, self.rng, self.hooks)
            self.trace.fault(f"world: {self.world}")
            for epoch in range(self.world.epochs):
                if epoch:
                    self._between_epochs()
                self._epoch(epoch)
            self._finish()
            violations = check_run(self.cluster, self.worker.store, self.epoch_starts, self.clock.now_ms)
        for kind, examples in self.problems.examples.items():
            for example in examples:
                violations.add(kind, example)
        digest = self._digest() if self.trace.verbose else ""
        return Outcome(
            self.seed, self.world, violations, self.worker.stats, self.trace.faults, self.trace.lines, digest
        )

    # -- phases --------------------------------------------------------------------------------------------------

    def _epoch(self, epoch: int) -> None:
        """Clients send this epoch's operations under faults; then a faulty tail, then a clean drain."""
        self.epoch_starts.append(self.clock.now_ms)
        self.workload.start_epoch(epoch)
        self.trace.fault(f"epoch {epoch}: {self.world.ops_per_epoch} operations")
        self.faulty = True
        tail = 0
        while not self.workload.done or tail < FAULTY_TAIL_STEPS:
            if self.workload.done:
                tail += 1
                if self.worker.quiet():
                    break
            self._step(produce=not self.workload.done)
        self.faulty = False
        self._drain()

    def _between_epochs(self) -> None:
        """Drain, then more than the retention window passes; rows age out, the worker may restart, holds expire."""
        self._drain()
        self.worker.commit()
        jump = self.rng.randint(self.world.retention_ms * 105 // 100, self.world.retention_ms * 5 // 2)
        self.clock.advance(jump)
        self.trace.fault(f"{jump / 3_600_000:.1f} h pass")
        gone = self.worker.compact_results(self.world.faults.compaction)
        self.trace.fault(f"compaction: {gone} result rows past their TTL removed")
        self.worker.delete_old_changelog()
        if self.rng.random() < 0.5:
            self.worker.restart(rebuild=self.rng.random() < 0.5)
        self._expire_holds()

    def _finish(self) -> None:
        """No more faults: drain, let every hold's expiry pass and be released, drain, commit."""
        self.trace.fault("final drain")
        self._drain()
        self.clock.advance(120_000)
        self._expire_holds()
        self.worker.commit()

    def _expire_holds(self) -> None:
        """The timer's rounds until no due hold is left (or a stuck one is left for the checks to report)."""
        for _ in range(EXPIRY_ROUNDS):
            sent = self.worker.expiry_timer()
            self._drain()
            if not sent:
                return
            self.clock.advance(int(RESEND_AFTER_S * 1000) + 1000)

    def _drain(self) -> None:
        """Take and checkpoint until every input is handled and acknowledged; no faults, no timer."""
        for _ in range(DRAIN_LIMIT):
            if self.worker.quiet():
                self.worker.commit()
                return
            self._step(produce=False, clock=False)
        self.problems.add("never_quiet", f"the pipeline did not drain in {DRAIN_LIMIT} steps")

    # -- one step ------------------------------------------------------------------------------------------------

    def _step(self, produce: bool, clock: bool = True) -> None:
        worker = self.worker
        rng = self.rng
        if self.faulty and worker.at_stake() and rng.random() < self.world.faults.kill:
            worker.kill(mid_step=worker.flight is not None and rng.random() < self.world.faults.mid_step)
            return
        deliverable = worker.deliverable()
        actions = ["produce", "deliver", "checkpoint", "commit", "timer", "tick"]
        weights = [
            3.0 if produce else 0.0,
            6.0 if deliverable else 0.0,
            3.0 if worker.can_checkpoint() else 0.0,
            self.world.faults.commit,
            1.5 if clock else 0.0,
            2.0 if clock else 0.0,
        ]
        action = rng.choices(actions, weights)[0]
        if action == "produce":
            self._produce()
        elif action == "deliver":
            worker.deliver(rng.choice(deliverable))
        elif action == "checkpoint":
            worker.checkpoint_step()
            if self.faulty and worker.after_results():
                faults = self.world.faults
                chance = faults.after_results_contended if worker.contended() else faults.after_results
                if rng.random() < chance:
                    worker.kill(mid_step=False)
        elif action == "commit":
            worker.commit()
        elif action == "timer":
            worker.expiry_timer()
        else:
            self._tick()

    def _produce(self) -> None:
        user_id, body, retry = self.workload.next(self.clock.now_ms)
        partition = self.world.home(user_id)
        key: Optional[bytes] = user_key(user_id)
        if self.rng.random() < self.world.faults.misplace:
            partition = self.rng.choice([p for p in range(self.world.partitions) if p != partition])
            key = None if self.rng.random() < 0.5 else key
            self.trace.fault(f"misplaced: {body!r} on partition {partition}, key {key!r}")
        offset = self.cluster.append(OPERATIONS, partition, key, body)
        self.trace.note(f"client{' retry' if retry else ''}: {OPERATIONS}/{partition}@{offset} {body!r}")

    def _tick(self) -> None:
        roll = self.rng.random()
        if roll < 0.8:
            self.clock.advance(self.rng.randint(0, 1500))
        elif roll < 0.95:
            self.clock.advance(self.rng.randint(1500, 10_000))
        else:
            self.clock.advance(self.rng.randint(30_000, 70_000))

    def _should_raise(self) -> bool:
        """The ``raise_in_decision`` failpoint, for client operations only (a leg that fails is money stuck)."""
        worker = self.worker
        message = worker.current
        if not self.faulty or message is None or message.topic != OPERATIONS:
            return False
        chance = self.world.faults.raise_replay if worker.is_redelivery() else self.world.faults.raise_first
        if chance <= 0 or self.rng.random() >= chance:
            return False
        worker.stats.raised += 1
        self.trace.fault(f"raise_in_decision: {message.topic}/{message.partition}@{message.offset}")
        return True

    def _digest(self) -> str:
        """A fingerprint of everything published and stored: two runs of a seed must agree on it."""
        digest = hashlib.sha256()
        for (topic, partition), log in sorted(self.cluster.logs.items()):
            digest.update(f"{topic}/{partition}/{log.start}".encode())
            for message in log.records:
                digest.update(repr((message.offset, message.timestamp, message.key, message.value)).encode())
        for (table, partition), rows in sorted(self.worker.store.rows.items()):
            digest.update(f"{table}/{partition}".encode())
            for key, value in rows.items():
                digest.update(key + b"=" + value)
        return digest.hexdigest()


def simulate(
    seed: int,
    size: int,
    verbose: bool = False,
    epochs: Optional[int] = None,
    faults: Optional[Mapping[str, float]] = None,
) -> Outcome:
    """Run one seed (``epochs``: that many retention windows instead of the seed's 2 or 3; ``faults``: rates)."""
    return Simulation(seed, size, verbose, epochs, faults).run()
