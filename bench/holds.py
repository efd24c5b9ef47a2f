"""What one operation costs a user with 10 and with 50,000 open holds: this code, and a baseline checkout.

The agent's per-message path, ``app.agents.ubscore.handle``, on a ``Batch`` in
memory as the agent tests drive it: each message is decided into a batch of its
own, whose rows are then encoded as the checkpoint encodes them (JSON, one
record per row) and kept as bytes, which the next message's reads decode, as
RocksDB reads do. A figure is therefore the decision, the table reads and writes
and the (de)serialization of every row the message touches: no Kafka, no disk.

The user's account is seeded as a row written before holds had rows of their
own (every hold inside it), which the old code and this one both read. This
code moves the holds to rows at the account's first write; that one-time
operation is timed apart ("first write"). Then, over and over: a lock that
opens a new hold, its unlock, a deposit. Each code runs in a process of its own
(``PYTHONPATH`` = its checkout), several rounds of at least ``BENCH_ROUND_S``
seconds; the figures are medians of the rounds, in microseconds per operation.

    python -m bench.holds                              # this code alone
    python -m bench.holds --baseline /tmp/holds-old    # side by side with a checkout of the old code
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
COUNTS = (10, 50_000)
KINDS = ("lock", "unlock", "deposit")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ROUND_S = float(os.environ.get("BENCH_ROUND_S", "2"))
USER = 7


def measure(holds: int, rounds: int, round_s: float) -> Dict[str, float]:
    """In this process, with the ``app`` on its path: us per operation of each kind, and of the first write."""
    logging.disable(logging.INFO)  # one line per event would be most of what is timed
    from faust.types import TP
    from faust.types.tuples import Message

    from app.agents import batch as batch_module
    from app.agents import ubscore
    from app.agents.batch import Batch
    from app.partitioning import partition_for, user_key
    from app.settings import settings
    from app.topics import OPERATIONS

    store: Dict[Tuple[str, int, bytes], bytes] = {}

    def read(table: Any, partition: int, key: bytes) -> Any:
        raw = store.get((table.name, partition, key))
        return None if raw is None else json.loads(raw)

    batch_module.read = read  # type: ignore[assignment]  # the tables, as bytes
    key = user_key(USER)
    partition = partition_for(key, settings.partitions)
    carried = {f"order-{i:06d}": {"asset": 1, "remaining": 1} for i in range(holds)}
    balances = {"1": {"available": 10**15, "locked": holds}}
    store[("accounts", partition, key)] = json.dumps({"seq": 1, "balances": balances, "holds": carried}).encode()
    offset = 0

    def one(body: Dict[str, Any]) -> float:
        nonlocal offset
        offset += 1
        value = json.dumps({"user_id": USER, "asset": 1, "op_id": f"op-{offset}", **body}).encode()
        at = 1_700_000_000 + offset / 1000
        message = Message(OPERATIONS, partition, offset, at, 0, None, key, value, None, tp=TP(OPERATIONS, partition))
        started = time.perf_counter()
        batch = Batch()
        ubscore.handle(batch, message)
        for (name, row_partition, row_key), row in batch.rows.items():
            if row is None:
                store.pop((name, row_partition, row_key), None)
            else:
                store[(name, row_partition, row_key)] = json.dumps(row, separators=(",", ":")).encode()
        return (time.perf_counter() - started) * 1e6

    figures: Dict[str, float] = {"first": one({"kind": "deposit", "amount": 1})}
    spent: Dict[str, List[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        taken: Dict[str, List[float]] = {kind: [] for kind in KINDS}
        deadline = time.perf_counter() + round_s
        while time.perf_counter() < deadline or len(taken["lock"]) < 3:
            hold_id = f"bench-{offset}"
            taken["lock"].append(one({"kind": "lock", "amount": 1, "hold_id": hold_id}))
            taken["unlock"].append(one({"kind": "unlock", "hold_id": hold_id}))
            taken["deposit"].append(one({"kind": "deposit", "amount": 1}))
        for kind in KINDS:
            spent[kind].append(statistics.mean(taken[kind]))
    figures.update({kind: statistics.median(spent[kind]) for kind in KINDS})
    return figures


def run_in(tree: Path, holds: int) -> Dict[str, float]:
    """``measure`` in a process of its own, on the code of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "UBS_STORE": "memory://", "UBS_DATA_DIR": "/tmp/bench-holds-data"}
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(holds)]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {holds} holds on {tree} failed:\n{done.stderr[-3000:]}")
    figures: Dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def describe(tree: Path) -> str:
    """The commit a checkout is at, ``-dirty`` when its tracked files changed."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, check=False)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _mean(figures: Dict[str, float]) -> float:
    return statistics.mean(figures[kind] for kind in KINDS)


def report(results: Dict[str, Dict[int, Dict[str, float]]]) -> None:
    """One line per code and number of holds, then the ratios: holds against holds, and each code against the first."""
    print(f"us per operation: median of {ROUNDS} rounds of at least {ROUND_S:g} s (lock, unlock, deposit in turn)")
    columns = "".join(f" {kind:>10}" for kind in (*KINDS, "mean"))
    print(f"{'code':<24} {'holds':>7}{columns} {'first write':>13}")
    for code, by_count in results.items():
        for count, figures in by_count.items():
            cells = "".join(f" {figures[kind]:10.1f}" for kind in KINDS)
            print(f"{code:<24} {count:>7,}{cells} {_mean(figures):10.1f} {figures['first']:13.1f}")
    print("ratios of the means")
    for code, by_count in results.items():
        ratio = _mean(by_count[COUNTS[1]]) / _mean(by_count[COUNTS[0]])
        print(f"  {code:<24} {COUNTS[1]:,} holds / {COUNTS[0]}: x{ratio:,.1f}")
    first, *others = results
    for code in others:
        for count in COUNTS:
            ratio = _mean(results[first][count]) / _mean(results[code][count])
            print(f"  {first} / {code}, {count:,} holds: x{ratio:,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with (git worktree add)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, ROUNDS, ROUND_S)))
        return
    trees = ([(f"baseline {describe(args.baseline)}", args.baseline)] if args.baseline else []) + [
        (f"this code {describe(REPO)}", REPO)
    ]
    report({code: {count: run_in(tree, count) for count in COUNTS} for code, tree in trees})


if __name__ == "__main__":
    main()
