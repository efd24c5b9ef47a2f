"""Seeded fault injection against the real stack, then the verifier: the proof that nothing is lost or doubled.

One run = one fresh world (topics, consumer group, keyspace) served by two
workers under a supervisor that restarts whatever exits, as systemd or
Kubernetes would. A seeded workload (transfers across partitions, client
retries, unkeyed and poison messages) is produced straight to Kafka while an
HTTP client submits more operations through the gateways, retrying each one
with the same op_id until a gateway acknowledges it. Meanwhile faults drawn
from the seed are injected on a schedule that is printed before it starts:

  kill        SIGKILL a worker at a random moment
  failpoint   restart a worker armed to SIGKILL itself after the table write,
              after the event send or before the offset commit
  gateway     restart a worker armed to die between Kafka's ack and its HTTP reply
  zombie      SIGSTOP a worker past the session timeout (the other takes over),
              then SIGCONT: it must fence itself (exit 75) instead of writing
  broker      kill -9 Kafka, restart it
  wipe        SIGKILL a worker and delete its RocksDB folder (rebuild from changelogs)
  database    kill the CQL database for 60 s, restart it
  netcut      cut worker 1 off the brokers (all of them, or one of three) for a few seconds
              to past its session timeout, then heal: clients still reach it over HTTP
  dbcut       cut worker 1 off the CQL database, then heal

Worker 1 reaches Kafka and the database only through TCP proxies of its own
(tests/integration/netcut.py): a cut there is a partition of that worker alone,
made without root privileges. Readers meanwhile read the HTTP clients' users'
balances through both workers, some with ``?min_seq=`` of the client's last
answer.

When the workload and the schedule are done, the verifier must pass (every
invariant of docs/design.md, tables = database = events = reference model =
what a rebuild from the accounts changelog gives), every operation a gateway
acknowledged must have a result, every 200 must match the stored result, every
zombie must have fenced itself, and no read may be stale: older than a write
acknowledged before the read began. Anything else is a violation.

    python -m tests.integration.chaos --runs 20 --ops 20000        # `make chaos`
    python -m tests.integration.chaos --seed 7 --ops 3000           # one run, seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import aiohttp
from aiokafka.errors import KafkaError

from app.exit_codes import ExitCode
from app.kafka_clients import new_producer
from app.tools.supervisor import Supervisor

from .harness import BOOTSTRAP, BROKERS, REPO, Worker, World, fresh_user_id, verify_eventually, workload
from .netcut import MODES, BrokerProxies, CutProxy
from .reads import Ack, Read, stale_reads

KINDS = ("kill", "failpoint", "gateway", "zombie", "broker", "wipe", "netcut", "dbcut")
WEIGHTS = (3, 4, 1, 1, 1, 1, 2, 1)
SESSION_TIMEOUT_S = 10.0
DATABASE_OUTAGE_S = 60.0
#: The worker whose Kafka and CQL connections go through the run's cut proxies.
CUT_WORKER = 1
#: The stack's CQL port, which worker 1's database proxy forwards to.
CQL_TARGET = "127.0.0.1:9042"
#: A reader's pause between two balance reads.
READ_PAUSE_S = 0.05


@dataclass
class Fault:
    """One scheduled fault: what, on which worker, when (seconds after the workload starts)."""

    at: float
    kind: str
    worker: int = 0
    detail: str = ""

    def describe(self) -> Dict[str, Any]:
        return {"at": round(self.at, 1), "kind": self.kind, "worker": self.worker, "detail": self.detail}


@dataclass
class RunResult:
    """What one run did and found."""

    seed: int
    brokers: int
    operations: int = 0
    http_acked: int = 0
    faults: Counter = field(default_factory=Counter)
    restarts: int = 0
    fired: int = 0
    fenced: int = 0
    holes: int = 0
    stalls: int = 0
    trades: int = 0
    expired: int = 0
    reads: int = 0
    stale: int = 0
    violations: int = 0
    problems: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def violate(self, problem: str, count: int = 1) -> None:
        self.violations += count
        self.problems.append(problem)


# Every fault kind once (the database outage has its own test), spaced so that no fault pre-empts
# the failpoint armed before it on the same worker: the short run of CI and of --every-fault-once.
EVERY_FAULT_ONCE = [
    Fault(2, "failpoint", 0, "after_table_write:100"),
    Fault(3, "gateway", 1, "after_produce:1"),
    Fault(8, "netcut", CUT_WORKER, "mode=blackhole brokers=all down_s=16"),
    Fault(25, "zombie", 0, "stopped_s=13"),
    Fault(38, "kill", 1, "SIGKILL"),
    Fault(40, "broker", 0, "kafka-2 down_s=3" if BROKERS > 1 else "down_s=3"),
    Fault(50, "dbcut", CUT_WORKER, "mode=reset down_s=8"),
    Fault(55, "wipe", 0),
    Fault(56, "failpoint", 1, "before_commit:2"),
    Fault(57, "failpoint", 0, "after_send:100"),
]


def schedule(rng: random.Random, count: int, span_s: float, database: bool) -> List[Fault]:
    """Draw ``count`` faults (and maybe a database outage) at random moments of the workload."""
    faults: List[Fault] = []
    for _ in range(count):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        fault = Fault(at=rng.uniform(3.0, span_s), kind=kind, worker=rng.randrange(2))
        if kind == "failpoint":
            point = rng.choice(["after_table_write", "after_send", "before_commit"])
            passes = rng.randint(1, 6) if point == "before_commit" else rng.randint(20, 1500)
            fault.detail = f"{point}:{passes}"
        elif kind == "gateway":
            fault.detail = f"after_produce:{rng.randint(1, 4)}"
        elif kind == "zombie":
            fault.detail = f"stopped_s={SESSION_TIMEOUT_S + rng.uniform(2.0, 5.0):.1f}"
        elif kind == "broker":
            # On three brokers one of them dies and the cluster carries on; on one, Kafka is gone.
            node = f"kafka-{rng.randint(1, BROKERS)} " if BROKERS > 1 else ""
            fault.detail = f"{node}down_s={rng.uniform(1.0, 6.0):.1f}"
        elif kind == "kill":
            fault.detail = "SIGKILL"
        elif kind == "netcut":
            # Short cuts the worker rides out, long ones past its session that move its partitions.
            brokers = str(rng.randint(1, BROKERS)) if BROKERS > 1 and rng.random() < 0.5 else "all"
            down_s = rng.uniform(2.0, SESSION_TIMEOUT_S + 10.0)
            fault.worker, fault.detail = CUT_WORKER, f"mode={rng.choice(MODES)} brokers={brokers} down_s={down_s:.1f}"
        elif kind == "dbcut":
            fault.worker, fault.detail = CUT_WORKER, f"mode={rng.choice(MODES)} down_s={rng.uniform(5.0, 40.0):.1f}"
        faults.append(fault)
    if database:
        faults.append(Fault(at=rng.uniform(3.0, span_s / 2), kind="database", detail=f"down_s={DATABASE_OUTAGE_S:.0f}"))
    return sorted(faults, key=lambda f: f.at)


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "stack/bin/stack"), *args], check=True, timeout=300, stdout=subprocess.DEVNULL)


def supervise(workers: List[Worker], log: "RunLog") -> Supervisor:
    """A supervisor that restarts any worker that exits, a second later, as a process manager would."""
    return Supervisor(
        workers,
        restart=lambda status: True,
        restart_delay_s=1.0,
        on_restart=lambda index: log.event("restart", worker=index),
    )


async def watch(supervisor: Supervisor, workers: List[Worker], log: "RunLog", fired: List[str]) -> None:
    """Poll the supervisor; log each exit and count the failpoints that fired (a SIGKILL of an armed worker)."""
    while True:
        await asyncio.sleep(0.5)
        for exit_ in supervisor.poll():
            armed = workers[exit_.index].extra_env.pop("UBS_FAILPOINT", None)
            if armed is not None and exit_.status == -signal.SIGKILL:
                fired.append(armed)
            log.event("exit", worker=exit_.index, code=exit_.status, failpoint=armed)


class RunLog:
    """One JSON line per event, to the run's log file and (briefly) to stdout."""

    def __init__(self, path: Path, seed: int, quiet: bool) -> None:
        self.path = path
        self.seed = seed
        self.quiet = quiet
        self.started = time.monotonic()

    def event(self, what: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.monotonic() - self.started, 1), "seed": self.seed, "event": what, **fields})
        with open(self.path, "a") as out:
            out.write(line + "\n")
        if not self.quiet:
            print(line, flush=True)


async def produce_with_retries(topic: str, messages: List[Tuple[Optional[bytes], bytes]], per_second: float) -> int:
    """Produce at a steady rate; a send that fails (the broker is down) is sent again until it lands.

    A re-sent message may land twice, which is exactly a client retry: the ledger must apply it once.
    """
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=5, request_timeout_ms=10_000)
    await producer.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    window: List[Tuple[Tuple[Optional[bytes], bytes], Any]] = []

    async def settle() -> None:
        for message, future in window:
            while True:
                try:
                    await future
                    break
                except KafkaError:
                    await asyncio.sleep(0.5)
                    try:
                        future = await producer.send(topic, key=message[0], value=message[1])
                    except KafkaError:
                        continue
        window.clear()

    try:
        for index, message in enumerate(messages):
            delay = start + index / per_second - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                try:
                    window.append((message, await producer.send(topic, key=message[0], value=message[1])))
                    break
                except KafkaError:
                    await asyncio.sleep(0.5)
            if len(window) >= 200:
                await settle()
        await settle()
    finally:
        await producer.stop()
    return len(messages)


async def reader(
    workers: List[Worker], rng: random.Random, users: List[int], acks: List[Ack], stop: asyncio.Event
) -> List[Read]:
    """Read the users' balances through any worker until ``stop``; a third of the reads ask for ``?min_seq=``
    of the user's last acknowledged seq (read-your-writes)."""
    reads: List[Read] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        while not stop.is_set():
            user, index = rng.choice(users), rng.randrange(len(workers))
            seqs = [a.body["seq"] for a in acks if a.user_id == user and a.status == 200 and "seq" in a.body]
            min_seq = max(seqs) if seqs and rng.random() < 0.33 else 0
            query = f"?min_seq={min_seq}" if min_seq else ""
            began = time.monotonic()
            try:
                async with http.get(f"{workers[index].url}/accounts/{user}{query}") as response:
                    body = await response.json(content_type=None)
                    if response.status == 200:
                        reads.append(Read(user, began, index, 200, int(body["seq"]), min_seq))
                    elif response.status == 404 and body.get("error") == "unknown_user":
                        reads.append(Read(user, began, index, 404, 0, min_seq))
                    else:
                        reads.append(Read(user, began, index, response.status, None, min_seq, body.get("error")))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                reads.append(Read(user, began, index, 0, None, min_seq, type(exc).__name__))
            await asyncio.sleep(READ_PAUSE_S)
    return reads


async def http_client(
    workers: List[Worker],
    rng: random.Random,
    users: List[int],
    count: int,
    span_s: float,
    name: str,
    log: RunLog,
    answers: Counter,
    acks: List[Ack],
) -> List[Ack]:
    """Submit ``count`` operations through the gateways over ``span_s`` seconds, retrying each with its
    op_id until acknowledged.

    A 202/200 is an acknowledgement; 5xx, timeouts and refused connections are retried on
    any worker. A 4xx would be a bug in this client and stops the run. ``answers`` counts
    every answer by status ("none" for no answer at all). Acknowledgements are appended
    to ``acks`` as they come (the readers look at them), and returned.
    """
    timeout = aiohttp.ClientTimeout(total=15)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for n in range(count):
            delay = start + n * span_s / count - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            user = rng.choice(users)
            kind = rng.choice(["deposit", "deposit", "withdraw", "lock", "unlock"])
            body = {"op_id": f"{name}-{n}", "kind": kind, "user_id": user, "asset": 1, "amount": rng.randint(1, 900)}
            wait = rng.random() < 0.5
            deadline = time.monotonic() + 300
            while True:
                worker = rng.choice(workers)
                try:
                    async with http.post(f"{worker.url}/operations?wait={'true' if wait else 'false'}", json=body) as r:
                        answer = await r.json(content_type=None)
                        answers[str(r.status)] += 1
                        if r.status in (200, 202):
                            acks.append(Ack(user, body["op_id"], r.status, answer, time.monotonic()))
                            break
                        if r.status < 500:
                            raise AssertionError(f"gateway answered {r.status} to a valid operation: {answer}")
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    answers["none"] += 1
                if time.monotonic() > deadline:
                    log.event("http_gave_up", op_id=body["op_id"])
                    break
                await asyncio.sleep(0.3)
    return acks


async def wait_exit(worker: Worker, timeout: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            return worker.process.returncode
        await asyncio.sleep(0.1)
    return None


@dataclass
class Injection:
    """What an injector needs: the fault, the worker it targets, and the run's shared state."""

    fault: Fault
    workers: List[Worker]
    supervisor: Supervisor
    result: "RunResult"
    log: "RunLog"
    cuts: "Cuts"

    @property
    def worker(self) -> Worker:
        return self.workers[self.fault.worker]

    @property
    def seconds(self) -> float:
        """The duration that ends a detail, such as ``stopped_s=40``."""
        return float(self.fault.detail.rsplit("=", 1)[1])

    @property
    def options(self) -> Dict[str, str]:
        """A detail's ``name=value`` words."""
        return dict(word.split("=", 1) for word in self.fault.detail.split() if "=" in word)


@dataclass
class Cuts:
    """Worker 1's way to Kafka and to the database: proxies that a fault can cut."""

    kafka: BrokerProxies
    database: CutProxy

    def start(self) -> "Cuts":
        self.kafka.start()
        try:
            self.database.start()
        except Exception:
            self.kafka.close()
            raise
        return self

    def close(self) -> None:
        self.kafka.close()
        self.database.close()

    def env(self) -> Dict[str, str]:
        """What makes a worker go through them."""
        host, port = self.database.address.rsplit(":", 1)
        return {"UBS_KAFKA": self.kafka.kafka_url, "UBS_CQL_HOSTS": host, "UBS_CQL_PORT": port}


async def kill(job: Injection) -> None:
    job.worker.extra_env.pop("UBS_FAILPOINT", None)  # so that the supervisor does not count it as fired
    job.worker.stop(signal.SIGKILL)


async def restart_armed(job: Injection) -> None:
    """``failpoint`` and ``gateway``: restart the worker with the failpoint of the fault armed."""
    with held(job):
        job.worker.stop(signal.SIGKILL)
        job.worker.extra_env["UBS_FAILPOINT"] = job.fault.detail
        job.worker.start()


#: How long a zombie or a cut waits for its worker to be ready first.
ZOMBIE_READY_S = 60.0


def _ready(worker: Worker) -> bool:
    health = worker.health()
    return health is not None and health.get("status") == "ok"


async def until_ready(worker: Worker) -> None:
    """Wait up to ``ZOMBIE_READY_S`` for the worker to say ``ok``."""
    deadline = time.monotonic() + ZOMBIE_READY_S
    while time.monotonic() < deadline and not await asyncio.to_thread(_ready, worker):  # noqa: ASYNC110
        await asyncio.sleep(0.5)  # an HTTP health answer, there is no event to wait on


async def zombie(job: Injection) -> None:
    """Freeze the worker past its session; on waking it must fence itself (exit 75) without writing."""
    with held(job):
        # A worker frozen before it is ready owns nothing and has no freeze watch yet: nothing to fence.
        # (A slow broker restart can delay a zombie until just after a wipe restarted its worker.)
        await until_ready(job.worker)
        process = job.worker.process
        if process is None or process.poll() is not None or not _ready(job.worker):
            job.log.event("zombie_skipped", worker=job.fault.worker, reason="not running or not ready")
            return
        os.killpg(process.pid, signal.SIGSTOP)
        await asyncio.sleep(job.seconds)
        os.killpg(process.pid, signal.SIGCONT)
        code = await wait_exit(job.worker, 10.0)
        job.log.event("zombie_woke", worker=job.fault.worker, exit=code)
        if code == ExitCode.FROZEN:
            job.result.fenced += 1
        else:
            job.result.violate(f"zombie worker {job.fault.worker} did not fence itself (exit {code})")
            job.worker.stop(signal.SIGKILL)
        job.worker.extra_env.pop("UBS_FAILPOINT", None)
        job.worker.start()


async def broker(job: Injection) -> None:
    """SIGKILL a broker (``kafka-2 down_s=3``) or all of them (``down_s=3``), and start it again."""
    service = job.fault.detail.split()[0] if " " in job.fault.detail else "kafka"
    await asyncio.to_thread(stack, "kill", service)
    await asyncio.sleep(job.seconds)
    await asyncio.to_thread(stack, "up", service)
    job.log.event("broker_back", service=service)


async def netcut(job: Injection) -> None:
    """Cut worker 1 off every broker or one of them (``brokers=2``) for ``down_s``, then heal.

    A worker cut before it is ready owns nothing: the cut waits for it, as a zombie does.
    """
    await until_ready(job.worker)
    brokers = None if job.options["brokers"] == "all" else [int(job.options["brokers"])]
    await asyncio.to_thread(job.cuts.kafka.cut, job.options["mode"], brokers)
    await asyncio.sleep(job.seconds)
    await asyncio.to_thread(job.cuts.kafka.heal, brokers)
    job.log.event("netcut_healed", worker=job.fault.worker, brokers=job.options["brokers"])


async def dbcut(job: Injection) -> None:
    """Cut worker 1 off the CQL database for ``down_s``, then heal."""
    await until_ready(job.worker)
    await asyncio.to_thread(job.cuts.database.cut, job.options["mode"])
    await asyncio.sleep(job.seconds)
    await asyncio.to_thread(job.cuts.database.heal)
    job.log.event("dbcut_healed", worker=job.fault.worker)


async def wipe(job: Injection) -> None:
    with held(job):
        job.worker.stop(signal.SIGKILL)
        shutil.rmtree(job.worker.data_dir, ignore_errors=True)
        job.worker.extra_env.pop("UBS_FAILPOINT", None)
        job.worker.start()


async def database(job: Injection) -> None:
    await asyncio.to_thread(stack, "kill", "cassandra")
    await asyncio.sleep(DATABASE_OUTAGE_S)
    await asyncio.to_thread(stack, "up", "cassandra")
    job.log.event("database_back")


@contextlib.contextmanager
def held(job: Injection) -> Iterator[None]:
    """Keep the supervisor's hands off the worker while the injector stops and starts it."""
    job.supervisor.held.add(job.fault.worker)
    try:
        yield
    finally:
        job.supervisor.held.discard(job.fault.worker)


INJECTORS: Dict[str, Callable[[Injection], Awaitable[None]]] = {
    "kill": kill,
    "failpoint": restart_armed,
    "gateway": restart_armed,
    "zombie": zombie,
    "broker": broker,
    "wipe": wipe,
    "database": database,
    "netcut": netcut,
    "dbcut": dbcut,
}


async def inject(
    fault: Fault, workers: List[Worker], supervisor: Supervisor, result: RunResult, log: RunLog, cuts: Cuts
) -> None:
    """Carry out one fault; returns when it is over (the worker restarted or left to the supervisor)."""
    log.event("fault", **fault.describe())
    result.faults[fault.kind] += 1
    await INJECTORS[fault.kind](Injection(fault, workers, supervisor, result, log, cuts))


async def run_faults(
    faults: List[Fault], workers: List[Worker], supervisor: Supervisor, result: RunResult, log: RunLog, cuts: Cuts
) -> None:
    """Faults on workers and the broker one after another, each at its time or right after the previous
    one; a database outage alongside them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    background: List[asyncio.Task] = []
    for fault in faults:
        delay = start + fault.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if fault.kind == "database":
            background.append(asyncio.create_task(inject(fault, workers, supervisor, result, log, cuts)))
        else:
            await inject(fault, workers, supervisor, result, log, cuts)
    await asyncio.gather(*background)


async def all_ready(workers: List[Worker], supervisor: Supervisor, timeout: float = 240.0) -> None:
    """Disarm leftover failpoints, then wait until both workers serve and the group is settled."""
    for index, worker in enumerate(workers):
        if "UBS_FAILPOINT" in worker.extra_env:
            supervisor.held.add(index)
            worker.stop(signal.SIGTERM)
            worker.extra_env.pop("UBS_FAILPOINT", None)
            worker.start()
            supervisor.held.discard(index)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [worker.health() for worker in workers]
        owned = sum(len(state.get("partitions", [])) for state in states if state)
        if all(s and s.get("status") == "ok" and not s.get("rebalancing") for s in states) and owned == 8:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError("workers not ready after the faults")


async def check_acks(workers: List[Worker], acks: List[Ack], result: RunResult) -> None:
    """Every acknowledged operation has exactly the result the gateway promised (no false 202/200)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for ack in acks:
            async with http.get(f"{workers[0].url}/operations/{ack.user_id}/{ack.op_id}") as response:
                stored = await response.json(content_type=None)
                if response.status != 200:
                    result.violate(f"acknowledged {ack.op_id} ({ack.status}) has no result: {stored}")
                elif ack.status == 200 and stored != ack.body:
                    result.violate(f"200 for {ack.op_id} said {ack.body}, the stored result is {stored}")


def prepare(base: Path, seed: int) -> None:
    """The logs folder, without the worker logs of an earlier run of the same seed."""
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"seed-{seed}-w*.log"):
        old.unlink()


async def run_once(
    seed: int,
    ops: int,
    rate: float,
    base: Path,
    faults: Optional[List[Fault]] = None,
    fault_count: Optional[int] = None,
    database: Optional[bool] = None,
    quiet: bool = False,
) -> RunResult:
    """One seeded run: workers, workload, faults, verification. Never raises on a violation: counts it."""
    rng = random.Random(seed)
    world = World(tag=f"chaos{seed}x{random.Random().randrange(16**6):06x}")
    prepare(base, seed)
    log = RunLog(base / f"seed-{seed}.jsonl", seed, quiet)
    result = RunResult(seed=seed, brokers=BROKERS)
    started = time.monotonic()
    messages = workload(ops=ops, users=200, seed=seed, faults=True)
    span_s = len(messages) / rate
    if faults is None:
        count = fault_count if fault_count is not None else rng.randint(4, 7)
        with_database = database if database is not None else rng.random() < 0.25
        faults = schedule(rng, count, span_s, with_database)
    log.event("schedule", world=world.tag, brokers=BROKERS, ops=len(messages), faults=[f.describe() for f in faults])
    cuts = Cuts(BrokerProxies.from_stack(), CutProxy(CQL_TARGET, name="cql")).start()
    workers = chaos_workers(world, base, seed, cuts)
    supervisor = supervise(workers, log)
    fired: List[str] = []
    watching: Optional[asyncio.Task] = None
    try:
        for worker in workers:
            worker.start()
        await asyncio.to_thread(workers[0].wait_ready)
        await asyncio.to_thread(workers[1].wait_ready)
        watching = asyncio.create_task(watch(supervisor, workers, log, fired))
        acks = await drive(world, workers, supervisor, messages, faults, rate, seed, result, log, cuts)
        await all_ready(workers, supervisor)
        await judge(workers, acks, result, log)
    except Exception as exc:  # noqa: BLE001 - a run that cannot finish is a failed run, not a crash of the suite
        result.violate(f"run failed: {repr(exc)[:300]}")
        log.event("run_failed", error=repr(exc)[-3000:])
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        for worker in workers:
            worker.stop()
        cuts.close()
        result.restarts, result.fired = supervisor.restarts, len(fired)
        result.holes, result.stalls = count_repairs(worker.log_path for worker in workers)
        log.event("repairs", holes=result.holes, stalls=result.stalls)
        result.seconds = time.monotonic() - started
        log.event("done", violations=result.violations, problems=result.problems[:5], seconds=round(result.seconds))
    return result


def chaos_workers(world: World, base: Path, seed: int, cuts: Cuts) -> List[Worker]:
    """The run's two workers (not started), with a short ``?wait=true`` timeout so a 504 is retried sooner;
    worker 1 reaches Kafka and the database through ``cuts``."""
    env = {
        "UBS_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
        "UBS_WAIT_TIMEOUT_S": "3",
    }
    return [
        Worker(
            world,
            base / world.tag / f"w{i}",
            base / f"seed-{seed}-w{i}.log",
            extra_env={**env, **(cuts.env() if i == CUT_WORKER else {})},
        )
        for i in range(2)
    ]


async def drive(
    world: World,
    workers: List[Worker],
    supervisor: Supervisor,
    messages: List[Tuple[Optional[bytes], bytes]],
    faults: List[Fault],
    rate: float,
    seed: int,
    result: RunResult,
    log: RunLog,
    cuts: Cuts,
) -> List[Ack]:
    """Produce the workload and run the HTTP clients and readers while the faults happen; the acknowledged
    submits. A stale read is a violation."""
    span_s = len(messages) / rate
    http_users = [fresh_user_id() for _ in range(10)]
    http_count = max(20, len(messages) // 40)
    answers: Counter = Counter()
    acks: List[Ack] = []
    producing = asyncio.create_task(produce_with_retries(world.topic("balance.operations"), messages, rate))
    clients = [
        asyncio.create_task(
            http_client(
                workers, random.Random(seed * 31 + i), http_users, http_count // 2, span_s, f"h{i}", log, answers, acks
            )
        )
        for i in range(2)
    ]
    stop_reading = asyncio.Event()
    readers = [
        asyncio.create_task(reader(workers, random.Random(seed * 37 + i), http_users, acks, stop_reading))
        for i in range(2)
    ]
    await run_faults(faults, workers, supervisor, result, log, cuts)
    result.operations = await producing
    await asyncio.gather(*clients)
    stop_reading.set()
    reads = [read for one in await asyncio.gather(*readers) for read in one]
    result.operations += len(acks)
    result.http_acked = len(acks)
    log.event("workload_done", produced=len(messages), http_acked=len(acks), http_answers=dict(answers))
    judge_reads(acks, reads, result, log)
    return acks


def judge_reads(acks: List[Ack], reads: List[Read], result: RunResult, log: RunLog) -> None:
    """Count the reads and their answers; every stale one is a violation."""
    stale = stale_reads(acks, reads)
    result.reads, result.stale = len(reads), len(stale)
    answers = Counter(f"{read.status}{' ' + read.error if read.error else ''}" for read in reads)
    log.event("reads", reads=len(reads), stale=len(stale), answers=dict(answers), first_stale=stale[:5])
    for problem in stale[:10]:
        result.violate(problem)
    if len(stale) > 10:
        result.violate(f"{len(stale) - 10} more stale reads", len(stale) - 10)


async def judge(workers: List[Worker], acks: List[Ack], result: RunResult, log: RunLog) -> None:
    """The verifier over everything, then every acknowledged submit against its stored result."""
    report = await verify_eventually(workers[0], timeout=300)
    log.event("verified", ok=report.ok, violations=report.total_violations, counts=dict(report.counts))
    result.trades = report.counts.get("trades_settled", 0)
    result.expired = report.counts.get("holds_expired", 0)
    if not report.ok:
        result.violate(f"verifier: {report.summary()}", report.total_violations)
    await check_acks(workers, acks, result)


def count_repairs(log_paths: Iterable[Path]) -> Tuple[int, int]:
    """Input holes the agent filled (app.guards.input_gaps) and stalls the watches acted on (input and recovery)."""
    holes = stalls = 0
    for path in log_paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        holes += text.count("input_gap topic=")
        stalls += text.count("input_stalled topic=") + text.count("recovery_stalled topic=")
    return holes, stalls


def from_log(path: Path) -> RunResult:
    """Rebuild a run's result from its JSON-lines log (to re-render tables of past runs)."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first = events[0]
    result = RunResult(seed=first["seed"], brokers=int(first.get("brokers", 1)))
    for event in events:
        kind = event["event"]
        if kind == "fault":
            result.faults[event["kind"]] += 1
        elif kind == "exit" and event.get("failpoint") and event.get("code") == -signal.SIGKILL:
            result.fired += 1
        elif kind == "zombie_woke" and event.get("exit") == ExitCode.FROZEN:
            result.fenced += 1
        elif kind == "restart":
            result.restarts += 1
        elif kind == "repairs":
            result.holes, result.stalls = event["holes"], event["stalls"]
        elif kind == "reads":
            result.reads, result.stale = event["reads"], event["stale"]
        elif kind == "workload_done":
            result.operations = event["produced"] + event["http_acked"]
            result.http_acked = event["http_acked"]
        elif kind == "verified":
            result.trades = event["counts"].get("trades_settled", 0)
            result.expired = event["counts"].get("holds_expired", 0)
        elif kind == "done":
            result.violations = event["violations"]
            result.problems = event.get("problems", [])
            result.seconds = event["seconds"]
    return result


def table(results: Sequence[RunResult], command: str) -> str:
    """The markdown summary committed to the repository."""
    kinds = list(KINDS) + ["database"]
    lines = [
        f"Command: `{command}`",
        "",
        "| seed | brokers | operations | HTTP acked | "
        + " | ".join(kinds)
        + " | failpoints fired | zombies fenced | restarts | holes filled | stalls | trades settled | holds expired"
        + " | reads | stale reads | violations | seconds |",
        "|---:|---|---:|---:|" + "---:|" * len(kinds) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        counts = " | ".join(str(r.faults.get(k, 0)) for k in kinds)
        lines.append(
            f"| {r.seed} | {r.brokers} | {r.operations} | {r.http_acked} | {counts} | {r.fired} | {r.fenced} "
            f"| {r.restarts} | {r.holes} | {r.stalls} | {r.trades} | {r.expired} | {r.reads} | {r.stale} "
            f"| {r.violations} | {r.seconds:.0f} |"
        )
    total = Counter()
    for r in results:
        total.update(r.faults)
    counts = " | ".join(str(total.get(k, 0)) for k in kinds)
    lines.append(
        f"| **{len(results)} runs** | | {sum(r.operations for r in results)} | {sum(r.http_acked for r in results)} "
        f"| {counts} | {sum(r.fired for r in results)} | {sum(r.fenced for r in results)} "
        f"| {sum(r.restarts for r in results)} | {sum(r.holes for r in results)} | {sum(r.stalls for r in results)} "
        f"| {sum(r.trades for r in results)} | {sum(r.expired for r in results)} "
        f"| {sum(r.reads for r in results)} | {sum(r.stale for r in results)} "
        f"| {sum(r.violations for r in results)} | {sum(r.seconds for r in results):.0f} |"
    )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> List[RunResult]:
    results: List[RunResult] = []
    seeds = [args.seed + i for i in range(args.runs)]
    for seed in seeds:
        database = {"auto": None, "yes": True, "no": False}[args.database]
        result = await run_once(
            seed,
            args.ops,
            args.rate,
            Path(args.logs),
            faults=list(EVERY_FAULT_ONCE) if args.every_fault_once else None,
            fault_count=args.faults,
            database=database,
            quiet=args.quiet,
        )
        results.append(result)
        print(
            f"run seed={seed} brokers={BROKERS} operations={result.operations} "
            f"faults={dict(result.faults)} restarts={result.restarts} violations={result.violations} "
            f"seconds={result.seconds:.0f}",
            flush=True,
        )
        for problem in result.problems:
            print(f"  violation: {problem}", flush=True)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run; run i uses seed + i")
    parser.add_argument("--ops", type=int, default=20_000, help="operations produced to Kafka per run")
    parser.add_argument("--rate", type=float, default=400.0, help="operations per second produced")
    parser.add_argument("--faults", type=int, help="faults per run (default: 4 to 7, drawn from the seed)")
    parser.add_argument("--every-fault-once", action="store_true", help="the fixed schedule of the CI run")
    parser.add_argument("--database", default="auto", choices=["auto", "yes", "no"], help="a 60 s database outage")
    parser.add_argument("--logs", default="/tmp/ubscore-chaos", help="folder for run logs and worker data")
    parser.add_argument("--table", help="write the markdown summary table to this file")
    parser.add_argument("--from-logs", action="store_true", help="only render the table of past runs' logs")
    parser.add_argument("--quiet", action="store_true", help="events to the run logs only")
    args = parser.parse_args(argv)
    if args.from_logs:
        results = [from_log(Path(args.logs) / f"seed-{args.seed + i}.jsonl") for i in range(args.runs)]
    else:
        results = asyncio.run(main_async(args))
    command = "python -m tests.integration.chaos " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = table(results, command)
    print(summary)
    if args.table:
        Path(args.table).write_text(summary)
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
