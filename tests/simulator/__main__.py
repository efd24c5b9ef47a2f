"""``python -m tests.simulator --seeds N [--first-seed S] | --seed S [--verbose]``: run seeds, report the failing ones.

Exit status 0 when every seed held every invariant, 1 otherwise. A failing seed
is printed with its violations, the last faults before the end, and the command
that replays it exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import List, Optional

from tests.simulator.simulation import Outcome, simulate
from tests.simulator.world import fault_overrides

DEFAULT_SIZE = 40
LAST_FAULTS = 12


def main(argv: Optional[List[str]] = None) -> int:
    """Run the seeds the arguments name; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m tests.simulator", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"client operations per seed ({DEFAULT_SIZE})")
    parser.add_argument(
        "--epochs", type=int, help="retention windows per seed (default: the seed's 2 or 3; 1: no reuse)"
    )
    parser.add_argument(
        "--fault", action="append", metavar="NAME=RATE", help="override a fault rate of every seed (Faults' fields)"
    )
    parser.add_argument("--verbose", action="store_true", help="print every step of the run")
    parser.add_argument("--max-failures", type=int, default=0, help="stop after this many failing seeds (0: never)")
    args = parser.parse_args(argv)
    faults = fault_overrides(args.fault)
    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    options = f"--size {args.size}" + (f" --epochs {args.epochs}" if args.epochs is not None else "")
    options += "".join(f" --fault {spec}" for spec in args.fault or [])
    started = time.perf_counter()
    ran = 0
    failed: List[Outcome] = []
    kinds: Counter[str] = Counter()
    for seed in seeds:
        outcome = simulate(seed, args.size, verbose=args.verbose, epochs=args.epochs, faults=faults)
        ran += 1
        if args.verbose:
            print("\n".join(outcome.lines))
        if not outcome.ok:
            failed.append(outcome)
            kinds.update(sorted(outcome.violations.counts))
            print(report(outcome, options), flush=True)
            if args.max_failures and len(failed) >= args.max_failures:
                break
    elapsed = time.perf_counter() - started
    rate = ran / elapsed * 60 if elapsed > 0 else 0.0
    summary = f"{ran} seeds, {len(failed)} failed, {elapsed:.1f} s ({rate:,.0f} seeds/min)"
    if kinds:
        summary += f"; seeds failing per violation: {dict(sorted(kinds.items()))}"
    print(summary)
    return 1 if failed else 0


def report(outcome: Outcome, options: str) -> str:
    """A failing seed: its violations, its last faults, and how to replay it."""
    stats = outcome.stats
    lines = [
        f"seed {outcome.seed}: {outcome.violations.total} violations "
        f"({stats.delivered} records taken, {stats.redelivered} again, {stats.batches} batches, {stats.kills} kills, "
        f"{stats.kills_mid_step} inside a step, {stats.rebuilds} rebuilds, {stats.raised} decisions raised)",
        *(f"  {line}" for line in outcome.violations.lines()),
        "  last faults:",
        *(f"  {line}" for line in outcome.faults[-LAST_FAULTS:]),
        f"  replay: python -m tests.simulator --seed {outcome.seed} {options} --verbose",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
