"""What SASL_SSL and an authenticated, encrypted database cost: the same benchmarks on both stacks, side by side.

``make bench-secure`` starts the plain stack and the secured one (``stack up
--secure``: Kafka on SASL_SSL with SCRAM-SHA-512 and ACLs, the CQL database with
logins and client TLS) and runs, in turns, on the plain stack and then on the
secured one with its ``.stack/secure/env``:

- bench.pipeline: the raw baselines and UBSCore's pipelines over one workload
  (messages per second, and each as a ratio to its baseline in that run);
- bench.backlog: one ledger worker draining a backlog, and its CPU time per operation.

Both stacks stay up for the whole run, so each turn shares the machine with the
same idle services. Each pair of turns is a round (``BENCH_ROUNDS``, default 2);
the table shows the median of the rounds per stack and the secured figure over
the plain one; bench/results/<UTC time>-<commit>-secure.json keeps every turn.
The machine is shared and noisy: read ratios within this run.

    python -m bench.secure                  # both stacks must be up
    BENCH_ROUNDS=3 BENCH_OPS=30000 python -m bench.secure
"""

from __future__ import annotations

import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from bench.run import RESULTS, commit, machine
from tests.integration.harness import REPO

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SECURE_ENV = REPO / ".stack" / "secure" / "env"
#: Variables that pick a stack: cleared for the plain turns, set from the secured stack's env for the others.
STACK_VARIABLES = ("UBS_KAFKA", "UBS_CQL_", "STACK_SECURE_HOME", "STACK_PRODUCER_")
BACKLOG_LINE = re.compile(r"ops/s (\d+) .* cpu us/op (\d+)")

Figures = Dict[str, float]


def stack_env(secured: bool) -> Dict[str, str]:
    """This process's environment pointed at one stack: the plain one's defaults, or the secured one's env."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(STACK_VARIABLES)}
    if secured:
        for line in SECURE_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name and not name.startswith("#"):
                env[name] = value
    return env


def pipeline_figures(env: Dict[str, str]) -> Figures:
    """bench.pipeline's messages per second and ratios, by row name."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", "bench.pipeline", "--json", out.name], cwd=REPO, env=env, check=True)
        rows = json.loads(Path(out.name).read_text())["rows"]
    figures: Figures = {}
    for row in rows:
        figures[f"{row['pipeline']}, msg/s"] = row["per_s"]
        if not row["pipeline"].startswith(row["against"] + " "):  # a baseline is 1 x itself
            figures[f"{row['pipeline']}, x {row['against']}"] = row["ratio"]
    return figures


def backlog_figures(env: Dict[str, str]) -> Figures:
    """bench.backlog's drain rate and the worker's CPU time per operation."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.backlog"], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    print(done.stdout, end="", flush=True)
    match = BACKLOG_LINE.search(done.stdout)
    assert match, f"bench.backlog printed no figures:\n{done.stdout}"
    return {"ledger backlog, ops/s": float(match.group(1)), "ledger backlog, worker cpu us/op": float(match.group(2))}


def one_turn(secured: bool) -> Figures:
    name = "secured (SASL_SSL, SCRAM-SHA-512, ACLs; CQL login + TLS)" if secured else "plain"
    print(f"\n== {name} ==", flush=True)
    env = stack_env(secured)
    return {**pipeline_figures(env), **backlog_figures(env)}


def table(turns: Dict[bool, List[Figures]]) -> List[Tuple[str, float, float, float]]:
    """Per figure: the median on the plain stack, on the secured one, and secured / plain."""
    rows = []
    for name in turns[False][0]:
        plain = statistics.median(figures[name] for figures in turns[False])
        secured = statistics.median(figures[name] for figures in turns[True])
        rows.append((name, plain, secured, secured / plain if plain else float("nan")))
    return rows


def main() -> None:
    if not SECURE_ENV.exists():
        raise SystemExit(f"{SECURE_ENV} is missing: start the secured stack (make stack-up-secure)")
    turns: Dict[bool, List[Figures]] = {False: [], True: []}
    for round_ in range(ROUNDS):
        print(f"\n#### round {round_ + 1} of {ROUNDS}", flush=True)
        for on_secured in (False, True):
            turns[on_secured].append(one_turn(on_secured))
    print(f"\nmedian of {ROUNDS} rounds per stack; secured / plain: below 1 is slower when secured (us/op: above 1)")
    print(f"{'figure':<72}{'plain':>10}{'secured':>10}{'sec/plain':>11}")
    rows = table(turns)
    for name, plain, secured, ratio in rows:
        print(f"{name:<72}{_figure(plain)}{_figure(secured)}{ratio:>11.3f}")
    print(f"\nwritten: {write_results(turns, rows).relative_to(REPO)}")


def write_results(turns: Dict[bool, List[Figures]], rows: List[Tuple[str, float, float, float]]) -> Path:
    """Every turn's figures and the medians, with the date, the commit and the machine, in bench/results/."""
    when = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "date": when.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "rounds": ROUNDS,
        "plain": turns[False],
        "secured": turns[True],
        "medians": [{"figure": n, "plain": p, "secured": s, "secured_over_plain": r} for n, p, s, r in rows],
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{when.strftime('%Y%m%dT%H%MZ')}-{results['commit']}-secure.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _figure(value: float) -> str:
    """A rate in whole units, a ratio to three places."""
    return f"{value:>10.3f}" if value < 10 else f"{value:>10.0f}"


if __name__ == "__main__":
    main()
