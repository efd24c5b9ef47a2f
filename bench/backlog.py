"""How fast one ledger worker works through a backlog, with nothing else producing.

``balance.operations`` is filled with N operations first (a worker started and
stopped once creates the topics); then one worker of role ledger starts, and the
figure is operations per second from its first ready answer to the last event.
Without a producer or a sink beside it, this is the ledger's own rate on this
machine; ``bench.pipeline`` measures it side by side with the raw baselines.
It also prints the worker's CPU time per operation, which moves much less than
the rate when other work shares the machine: the figure to compare before and
after a change to the per-message path.

    python -m bench.backlog                         # 30,000 operations, 1,000 users
    BENCH_OPS=50000 UBS_MAX_FETCH_BYTES=16384 python -m bench.backlog
    BENCH_PROFILE=/tmp/ledger.txt python -m bench.backlog   # py-spy samples the worker while it drains

With ``BENCH_PROFILE`` the worker is sampled by py-spy from its first ready
answer to its last event, and the collapsed stacks are written there; it prints
where the samples fall, by the library that runs them (their own time, and time
under each of UBSCore's functions).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Optional

from bench.cpu import process_seconds
from bench.pipeline import count_until, produce_all
from tests.integration.harness import PARTITIONS, Worker, World, workload

PROFILE = os.environ.get("BENCH_PROFILE")
OPS = int(os.environ.get("BENCH_OPS", "30000"))
USERS = int(os.environ.get("BENCH_USERS", "1000"))
LEDGER = {"UBS_ROLE": "ledger"}


def checkpoint_metrics(url: str) -> dict:
    """The worker's ubscore_checkpoint* counters, by name."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(" ", 1) for line in lines if line.startswith("ubscore_checkpoint"))


async def main() -> None:
    messages = workload(OPS, USERS, orders=False)
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-backlog-"))
    creator = Worker(world, base / "creator", base / "creator.log", loglevel="warn", extra_env=LEDGER).start()
    await asyncio.to_thread(creator.wait_ready, PARTITIONS, 180)
    creator.stop()
    await produce_all(world.topic("balance.operations"), messages)
    worker = Worker(world, base / "data", base / "worker.log", loglevel="warn", extra_env=LEDGER, port=creator.port)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS, 180)
        sampler = start_sampling(worker) if PROFILE else None
        assert worker.process is not None
        pid = worker.process.pid
        start, cpu_start = time.monotonic(), process_seconds(pid)
        done = await count_until(world.topic("balance.events"), len(messages), timeout=900)
        cpu = process_seconds(pid) - cpu_start
        stop_sampling(sampler)
        metrics = await asyncio.to_thread(checkpoint_metrics, worker.url)
    finally:
        worker.stop()
    checkpoints = float(metrics.get("ubscore_checkpoints_total", "0"))
    inputs = float(metrics.get("ubscore_checkpoint_inputs_total", "0"))
    print(f"backlog of {len(messages)} operations, {USERS} users, {PARTITIONS} partitions, one ledger worker")
    rate, batch = len(messages) / (done - start), inputs / max(checkpoints, 1)
    print(f"ops/s {rate:.0f}  checkpoints {checkpoints:.0f}  mean batch {batch:.1f}  cpu us/op {cpu / OPS * 1e6:.0f}")
    if PROFILE:
        summarize(Path(PROFILE))


def start_sampling(worker: Worker) -> subprocess.Popen:
    """py-spy on the worker, its threads included, until stopped."""
    assert worker.process is not None and PROFILE is not None
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "-p", str(worker.process.pid), "-o", PROFILE, "--format", "raw", "-r", "200"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_sampling(sampler: Optional[subprocess.Popen]) -> None:
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        sampler.wait(timeout=60)


def where(frame: str) -> str:
    """The file of a collapsed-stack frame, ``fn (faust/streams.py:12)`` -> ``faust/streams.py``."""
    return frame.rsplit(" (", 1)[-1].rsplit(":", 1)[0]


def library(frame: str) -> str:
    """Who runs a frame: its top package (faust, aiokafka, app, asyncio, ...) or standard-library module."""
    return where(frame).split("/", 1)[0].removesuffix(".py")


def summarize(path: Path) -> None:
    """Own time by library, and inclusive time under the top UBSCore functions, as shares of all samples."""
    own: Counter = Counter()
    under: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[library(frames[-1])] += samples
        for frame in {f for f in frames if where(f).startswith("app/")}:
            under[f"{frame.split(' (', 1)[0]} {where(frame)}"] += samples
    print(f"\n{total} samples; own time by library:")
    for name, samples in own.most_common(12):
        print(f"  {samples / total:6.1%}  {name}")
    print("time under UBSCore's functions (inclusive):")
    for name, samples in under.most_common(15):
        print(f"  {samples / total:6.1%}  {name}")


if __name__ == "__main__":
    asyncio.run(main())
