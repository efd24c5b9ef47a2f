"""One seed's world: partitions, users, assets, sizes and fault rates, and the few patches the real code needs.

Everything is drawn from the seed's one ``random.Random``, first thing, so a seed
names a world. The agent's code runs unchanged; what is patched (for the
duration of a seed only, then restored) is where it touches the outside: the
partition count in ``app.settings.settings`` (the simulated cluster is smaller
than the default 8), the table read under ``Batch.get`` (``app.agents.batch.read``,
here the in-memory store of the running worker), the ``raise_in_decision``
failpoint (``app.frame.failpoints.hit``, here decided by the seed), and logging
(one line per event would dominate the run time).
"""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from faust.types import TableT

import app.agents.batch as batch_module
from app.frame import failpoints
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import results

#: A simulated epoch in ms (2023-11-14), far from any edge of the wire formats.
START_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Faults:
    """How hard a seed hits the ledger; each a probability."""

    #: Per scheduler step while something is at stake (input not committed): the worker is SIGKILLed.
    kill: float
    #: Of those kills, the share that lands inside a checkpoint step, with a per-partition prefix acknowledged.
    mid_step: float
    #: A kill right after a batch's result rows are acknowledged, its accounts not (the failpoint
    #: ``after_results``): the window where a replay must replace what the first attempt stored.
    after_results: float
    #: The same, when that batch holds records of both input streams of one partition: a replay can
    #: decide them in the other order (a buggify-style bias towards the moments that matter).
    after_results_contended: float
    #: Of the restarts, the share that rebuilds every table from its changelog (no local files).
    wipe: float
    #: A decision of a client operation raises (the ``raise_in_decision`` failpoint): first attempt, redelivery.
    raise_first: float
    raise_replay: float
    #: A client operation is sent again with its op_id; one is produced to a partition not its user's.
    retry: float
    misplace: float
    #: At a compaction after the TTL, each result row old enough goes; retention deletes a changelog prefix.
    compaction: float
    #: How often the group commits, relative to the other steps (low: commits lag several batches).
    commit: float


@dataclass(frozen=True)
class World:
    """The fixed shape of one seed's run."""

    seed: int
    partitions: int
    users: Tuple[int, ...]
    fee_account: int
    assets: Tuple[int, ...]
    epochs: int
    ops_per_epoch: int
    #: UBS_BATCH_MAX for this run: the agent stops taking input while the open batch holds this many.
    batch_limit: int
    faults: Faults
    #: UBS_RESULTS_RETENTION_S in ms: ids are reused only once this much simulated time has passed.
    retention_ms: int
    #: The physical TTL of result rows in RocksDB, read from the results table's options.
    ttl_ms: int
    #: retention.ms of the results changelog (None: kept for ever), read from the table's topic configs.
    changelog_retention_ms: Optional[int]

    @property
    def parties(self) -> Tuple[int, ...]:
        """Every user that holds money: the traders and the fee account."""
        return (*self.users, self.fee_account)

    def home(self, user_id: int) -> int:
        """The partition a user lives on, as every client and the agent compute it."""
        return partition_for(user_key(user_id), self.partitions)

    @classmethod
    def draw(
        cls,
        seed: int,
        rng: random.Random,
        size: int,
        epochs: Optional[int] = None,
        faults: Optional[Mapping[str, float]] = None,
    ) -> "World":
        """A world for ``seed``, about ``size`` client operations in all.

        ``epochs`` 1 reuses no id; ``faults`` overrides fault rates by name. Both are
        applied after the draw, so the rest of the world stays the seed's.
        """
        ids = rng.sample(range(1001, 99_999), 7)
        traders = rng.randint(3, 6)
        drawn = rng.randint(2, 3)  # drawn even when given, so that the rest of the world stays the seed's
        epochs = drawn if epochs is None else epochs
        aggressive = rng.random() < 0.5
        drawn_faults = Faults(
            kill=rng.choice((0.01, 0.02, 0.05)) * (2 if aggressive else 1),
            mid_step=rng.choice((0.3, 0.5, 0.7)),
            after_results=rng.choice((0.0, 0.1, 0.3)),
            after_results_contended=rng.choice((0.0, 0.5, 0.9)),
            wipe=rng.choice((0.0, 0.2, 0.5)),
            raise_first=rng.choice((0.0, 0.0, 0.01)),
            raise_replay=rng.choice((0.0, 0.1, 0.3)),
            retry=rng.choice((0.05, 0.15)),
            misplace=rng.choice((0.0, 0.03)),
            compaction=rng.choice((0.3, 0.6, 0.9)),
            commit=rng.choice((0.1, 0.3, 1.0)),
        )
        drawn_faults = replace(drawn_faults, **(faults or {}))
        retention_ms = settings.results_retention_s * 1000
        configs = getattr(results, "extra_topic_configs", None) or {}
        changelog_retention = configs.get("retention.ms")
        return cls(
            seed=seed,
            partitions=rng.randint(2, 4),
            users=tuple(ids[:traders]),
            fee_account=ids[-1],
            assets=rng.choice(((1, 2), (1, 2, 3))),
            epochs=epochs,
            ops_per_epoch=max(4, size // epochs),
            batch_limit=rng.choice((1, 2, 3, 5, 8, 1000)),
            faults=drawn_faults,
            retention_ms=retention_ms,
            ttl_ms=int((results.options or {}).get("ttl", settings.results_retention_s)) * 1000,
            changelog_retention_ms=None if changelog_retention is None else int(changelog_retention),
        )


def fault_overrides(specs: Optional[list[str]]) -> Dict[str, float]:
    """``["kill=0.1", "wipe=0"]`` -> {"kill": 0.1, "wipe": 0.0}, refusing names Faults does not have."""
    known = {item.name for item in fields(Faults)}
    found: Dict[str, float] = {}
    for spec in specs or []:
        name, _, value = spec.partition("=")
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; one of {sorted(known)}")
        found[name] = float(value)
    return found


class Hooks:
    """Where the patched functions find the running simulation (set by the worker and the scheduler)."""

    def __init__(self) -> None:
        self.read: Callable[[TableT, int, bytes], Any] = _no_worker
        self.should_raise: Callable[[], bool] = lambda: False


def _no_worker(table: TableT, partition: int, key: bytes) -> Any:
    raise AssertionError("a table read with no simulated worker running")


@contextmanager
def patched(world: World, hooks: Hooks) -> Iterator[None]:
    """Point the agent's few outside touches at the simulation, and put everything back afterwards."""
    saved_partitions = settings.partitions
    saved_read = batch_module.read
    saved_hit = failpoints.hit
    saved_disable = logging.root.manager.disable

    def hit(name: str, action: Optional[Callable[[], None]] = None, passes: int = 1) -> None:
        if name == "raise_in_decision" and action is not None and hooks.should_raise():
            action()

    object.__setattr__(settings, "partitions", world.partitions)
    batch_module.read = lambda table, partition, key: hooks.read(table, partition, key)
    failpoints.hit = hit
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        object.__setattr__(settings, "partitions", saved_partitions)
        batch_module.read = saved_read
        failpoints.hit = saved_hit
        logging.disable(saved_disable)
