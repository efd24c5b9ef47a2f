"""``make bench``: throughput, latency and recovery in one run, written to bench/results/ with a plot.

Runs bench.pipeline, bench.latency and bench.recovery one after another on the
running stack, prints their tables, then writes ``bench/results/<UTC time>-<commit>.json``
(every figure, with the date, the commit and the machine) and redraws
``bench/results/latency.svg`` (latency against offered rate; ``latency-quick.svg`` for a
quick run) from that run.

    make bench          # the full run (about 20 minutes)
    make bench-quick    # BENCH_QUICK=1: two rates of 8 s, 20k accounts (under 5 minutes)
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

from bench import latency, pipeline, recovery  # noqa: E402
from tests.integration.harness import BOOTSTRAP, REPO  # noqa: E402

RESULTS = REPO / "bench" / "results"


def machine() -> Dict[str, Any]:
    """What the figures were measured on: they compare only within one run on one machine."""
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "brokers": BOOTSTRAP,
    }


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def plot(latencies: Dict[str, Any], title: str, path: Path) -> None:
    """Percentiles of submit -> result and -> row against the offered rate."""
    steps: List[Dict[str, Any]] = latencies["steps"]
    rates = [step["offered"] for step in steps]
    figure, axes = plt.subplots(figsize=(7, 4))
    for key, label, style in (
        ("result_ms", "result", "-"),
        ("row_ms", "database row", "--"),
    ):
        for percentile, marker in (("p50", "o"), ("p99", "s")):
            values = [step[key].get(percentile, float("nan")) for step in steps]
            axes.plot(rates, values, style, marker=marker, label=f"{label} {percentile}")
    axes.axvline(latencies["maximum_per_s"], color="grey", linewidth=0.8)
    axes.text(latencies["maximum_per_s"], axes.get_ylim()[1] * 0.95, " max", color="grey", va="top")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate, operations/s (open loop)")
    axes.set_ylabel("latency from submit, ms")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


async def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    started = time.monotonic()
    when = datetime.datetime.now(datetime.timezone.utc)
    results: Dict[str, Any] = {
        "date": when.isoformat(timespec="seconds"),
        "commit": commit(),
        "mode": "quick" if quick else "full",
        "machine": machine(),
    }
    print("== throughput ==", flush=True)
    results["throughput"] = await pipeline.run()
    print("\n== latency ==", flush=True)
    results["latency"] = await latency.run()
    print("\n== recovery ==", flush=True)
    results["recovery"] = await recovery.run()
    results["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    stem = f"{when.strftime('%Y%m%dT%H%MZ')}-{results['commit']}{'-quick' if quick else ''}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    title = f"{results['mode']} run {results['date']} at {results['commit']}, {results['machine']['cpus']} cores"
    svg = f"latency{'-quick' if quick else ''}.svg"
    plot(results["latency"], title, RESULTS / svg)
    print(f"\nwritten: bench/results/{stem}.json and bench/results/{svg} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
