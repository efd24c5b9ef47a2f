"""Latency from submit to result, to event and to database row, open loop, against the offered rate.

One ledger worker (with its gateway) and one sink process on a fresh world:

1. The maximum: ``wrk`` drives ``POST /operations?wait=true`` with 128 connections for
   a few seconds, each request a deposit with a fresh op_id (bench/submit.lua). A
   closed loop is right for this: it finds the rate at which results come back when
   clients never pause.
2. Then, for each fraction of that rate, an open loop: requests are started on a fixed
   schedule whether or not earlier ones have answered, and each latency counts from
   the request's scheduled time. A closed loop (wrk, hey) waits for answers before it
   sends more, so a stall delays the requests that would have measured it
   ("coordinated omission"); this one does not. Measured per operation:
   - result: the ``?wait=true`` answer (200 once the result and the account are written);
   - event: its result event read from ``balance.events``;
   - row: the sink's committed offset on ``balance.events`` passing that event (the sink
     commits only after the database acknowledged the rows), polled every 20 ms.
   Percentiles come from HdrHistogram. The generator shares the machine: its own lag
   (how late it started requests) is reported beside the figures, and so is the CPU
   each process kept busy during the step (the ledger, the sink, Kafka, Cassandra,
   the generator) against the whole machine's, so a rate the machine cannot carry
   shows as such.

    python -m bench.latency                     # fractions 0.1 .. 0.9, 20 s each
    BENCH_QUICK=1 python -m bench.latency       # 0.5 and 0.9, 8 s each
    BENCH_RATES=100,200,300 python -m bench.latency   # these rates, no wrk
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import aiohttp
from aiokafka import TopicPartition
from hdrh.histogram import HdrHistogram

from app.kafka_clients import new_admin_client, new_consumer
from bench.cpu import CpuWindow, stack_pids
from tests.integration.harness import BOOTSTRAP, PARTITIONS, REPO, Worker, World

QUICK = os.environ.get("BENCH_QUICK") == "1"
FRACTIONS = [0.5, 0.9] if QUICK else [0.1, 0.3, 0.5, 0.7, 0.9]
STEP_S = 8.0 if QUICK else 20.0
#: Fixed offered rates instead of fractions of wrk's maximum: the same rates before and after a change.
RATES = [float(rate) for rate in os.environ.get("BENCH_RATES", "").split(",") if rate.strip()]
WRK_S = 6 if QUICK else 12
USERS = 10_000
COMMIT_POLL_S = 0.02
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class Sent:
    """One open-loop request: when it was due, when it went out, when and how it was answered."""

    op_id: str
    due: float
    started: float = 0.0
    answered: Optional[float] = None
    status: int = 0


@dataclass
class Step:
    """What one offered rate gave."""

    fraction: float
    offered: float
    achieved: float = 0.0
    statuses: Dict[str, int] = field(default_factory=dict)
    result_ms: Dict[str, float] = field(default_factory=dict)
    event_ms: Dict[str, float] = field(default_factory=dict)
    row_ms: Dict[str, float] = field(default_factory=dict)
    generator_lag_ms: Dict[str, float] = field(default_factory=dict)
    #: Cores kept busy during the step: by the ledger, the sink, the brokers, the database, this generator, all.
    cpu_cores: Dict[str, float] = field(default_factory=dict)


def percentiles(values_s: List[float]) -> Dict[str, float]:
    """p50 .. p99.9 and max of a list of seconds, in milliseconds (HdrHistogram, 3 significant digits)."""
    histogram = HdrHistogram(1, 600_000_000, 3)  # 1 µs to 10 min
    for value in values_s:
        histogram.record_value(max(1, int(value * 1_000_000)))
    if not values_s:
        return {}
    figures = {f"p{p:g}": histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    figures["max"] = histogram.get_max_value() / 1000
    return figures


def wrk_maximum(url: str) -> float:
    """Results per second from wrk saturating POST /operations?wait=true (2xx answers only)."""
    tag = uuid.uuid4().hex[:8]
    command = ["wrk", "-t2", "-c128", f"-d{WRK_S}s", "-s", str(REPO / "bench/submit.lua"), url, "--", tag, str(USERS)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=WRK_S + 60).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"requests in ([\d.]+)s", output).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return (total - (int(failed.group(1)) if failed else 0)) / seconds


class EventWatch:
    """Reads balance.events from its end: when each op_id's result event arrived, and where it sits."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.seen: Dict[str, Tuple[float, int, int]] = {}  # op_id -> (arrival, partition, offset)
        self.consumer = new_consumer(BOOTSTRAP, group_id=None, auto_offset_reset="latest")

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        await self.consumer.seek_to_end()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = loop.time()
            for tp, records in batches.items():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("kind") != "transfer_in":
                        self.seen.setdefault(event["op_id"], (now, tp.partition, record.offset))


class CommitWatch:
    """Polls the sink's committed offsets: when each (partition, offset) of balance.events was settled."""

    def __init__(self, topic: str, group: str) -> None:
        self.topic, self.group = topic, group
        self.history: Dict[int, List[Tuple[float, int]]] = {p: [] for p in range(PARTITIONS)}
        self.admin = new_admin_client(BOOTSTRAP)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.admin.start()
        try:
            while True:
                offsets = await self.admin.list_consumer_group_offsets(self.group)
                now = loop.time()
                for tp, meta in offsets.items():
                    if tp.topic == self.topic:
                        seen = self.history[tp.partition]
                        if not seen or seen[-1][1] != meta.offset:
                            seen.append((now, meta.offset))
                await asyncio.sleep(COMMIT_POLL_S)
        finally:
            await self.admin.close()

    def settled_at(self, partition: int, offset: int) -> Optional[float]:
        """The first poll that saw a committed offset past ``offset`` (a commit names the next record)."""
        for when, committed in self.history[partition]:
            if committed > offset:
                return when
        return None


async def open_loop(http: aiohttp.ClientSession, url: str, rate: float, seconds: float, tag: str) -> List[Sent]:
    """Start ``rate`` deposits a second for ``seconds`` on schedule, each on its own; wait for all answers."""
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    start = loop.time() + 0.1
    sent = [Sent(f"{tag}-{i}", start + i / rate) for i in range(count)]

    async def one(request: Sent, user: int) -> None:
        request.started = loop.time()
        body = {"op_id": request.op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": 1}
        try:
            async with http.post(url, params={"wait": "true"}, json=body) as response:
                await response.read()
                request.status = response.status
        except aiohttp.ClientError:
            request.status = -1
        request.answered = loop.time()

    tasks = []
    for i, request in enumerate(sent):
        delay = request.due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, 2_000_000 + i % USERS)))
    await asyncio.gather(*tasks)
    return sent


async def settle(events: EventWatch, commits: CommitWatch, sent: List[Sent], timeout: float = 120.0) -> None:
    """Until every answered operation's event is read and settled by the sink."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        located = [events.seen.get(s.op_id) for s in sent if s.status == 200]
        if all(place is not None and commits.settled_at(place[1], place[2]) is not None for place in located):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("results were not all read and settled")


async def drained(events: EventWatch, commits: CommitWatch, timeout: float = 180.0) -> None:
    """Until the sink has committed everything on balance.events."""
    tps = [TopicPartition(events.topic, p) for p in range(PARTITIONS)]
    ends = await events.consumer.end_offsets(tps)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settled = {partition: seen[-1][1] for partition, seen in commits.history.items() if seen}
        if all(end == 0 or settled.get(tp.partition, -1) >= end for tp, end in ends.items()):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the sink did not catch up with balance.events")


def measure(step: Step, sent: List[Sent], events: EventWatch, commits: CommitWatch) -> None:
    ok = [s for s in sent if s.status == 200 and s.answered is not None]
    span = max(s.answered or s.due for s in sent) - sent[0].due
    step.achieved = len(ok) / span if span > 0 else 0.0
    for request in sent:
        step.statuses[str(request.status)] = step.statuses.get(str(request.status), 0) + 1
    step.result_ms = percentiles([(s.answered or 0) - s.due for s in ok])
    step.generator_lag_ms = percentiles([s.started - s.due for s in sent])
    event_s, row_s = [], []
    for request in ok:
        place = events.seen.get(request.op_id)
        if place is None:
            continue
        event_s.append(place[0] - request.due)
        settled = commits.settled_at(place[1], place[2])
        if settled is not None:
            row_s.append(settled - request.due)
    step.event_ms, step.row_ms = percentiles(event_s), percentiles(row_s)


async def run() -> Dict[str, Any]:
    """The maximum, then each fraction of it; figures as a dict for bench.run."""
    world = World()
    base = Path(tempfile.mkdtemp(prefix="ubscore-bench-latency-"))
    ledger = Worker(world, base / "ledger", base / "ledger.log", loglevel="warn", extra_env={"UBS_ROLE": "ledger"})
    sink = Worker(world, base / "sink", base / "sink.log", loglevel="warn", extra_env={"UBS_ROLE": "sink"})
    ledger.start()
    sink.start()
    events = EventWatch(world.topic("balance.events"))
    commits = CommitWatch(world.topic("balance.events"), f"{world.app_id}-settlement")
    watchers: List[asyncio.Task] = []
    try:
        await asyncio.to_thread(ledger.wait_ready, PARTITIONS, 180)  # the sink process serves no HTTP
        await events.start()
        watchers = [asyncio.create_task(events.run()), asyncio.create_task(commits.run())]
        url = f"{ledger.url}/operations"
        assert ledger.process is not None and sink.process is not None
        processes = {"ledger": ledger.process.pid, "sink": sink.process.pid, "generator": os.getpid(), **stack_pids()}
        if RATES:
            maximum, fractions = max(RATES), [rate / max(RATES) for rate in RATES]
        else:
            maximum, fractions = await asyncio.to_thread(wrk_maximum, ledger.url), FRACTIONS
            print(f"maximum (wrk, 128 connections, ?wait=true): {maximum:.0f} results/s", flush=True)
            await drained(events, commits)  # the first rate must not inherit the sink's backlog
        steps = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            for fraction in fractions:
                step = Step(fraction, maximum * fraction)
                window = CpuWindow(processes).start()
                sent = await open_loop(http, url, step.offered, STEP_S, f"{world.tag}-{fraction}")
                step.cpu_cores = window.shares()
                await settle(events, commits, sent)
                measure(step, sent, events, commits)
                print_step(step)
                steps.append(step)
        return {"maximum_per_s": maximum, "step_s": STEP_S, "steps": [step.__dict__ for step in steps]}
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await events.consumer.stop()
        ledger.stop()
        sink.stop()


def print_step(step: Step) -> None:
    def cut(figures: Dict[str, float]) -> str:
        return " ".join(f"{name} {figures[name]:.1f}" for name in ("p50", "p90", "p99", "max") if name in figures)

    print(
        f"{step.fraction:.0%} of max: offered {step.offered:.0f}/s, achieved {step.achieved:.0f}/s, "
        f"answers {step.statuses}",
        flush=True,
    )
    print(f"    result ms: {cut(step.result_ms)}", flush=True)
    print(f"    event  ms: {cut(step.event_ms)}", flush=True)
    print(f"    row    ms: {cut(step.row_ms)}", flush=True)
    print(f"    generator lag ms: {cut(step.generator_lag_ms)}", flush=True)
    cores = step.cpu_cores
    if cores:
        named = " ".join(f"{name} {cores[name]:.2f}" for name in cores if name not in ("machine", "cores"))
        print(f"    cores busy: {named}, machine {cores['machine']:.2f} of {cores['cores']:.1f}", flush=True)


if __name__ == "__main__":
    asyncio.run(run())
