"""Helpers for integration tests: real workers, real Kafka, the real CQL database.

A test run gets a world of its own: a topic prefix, a Faust app id (consumer
group and changelog topics) and a keyspace nobody used before, so runs never see
each other's data and the worker starts before any of its topics exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from app import topic_reader
from app.kafka_clients import new_producer
from app.partitioning import user_key
from app.settings import Settings, load

Record = Tuple[Optional[bytes], bytes]
REPO = Path(__file__).resolve().parents[2]


def _stack_bootstrap() -> str:
    """The brokers of this clone's stack (one, or three with STACK_KAFKA_BROKERS=3)."""
    done = subprocess.run(
        [str(REPO / "stack/bin/stack"), "bootstrap"], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "127.0.0.1:9092"


KAFKA = os.environ.get("UBS_KAFKA") or "kafka://" + _stack_bootstrap().replace(",", ";")
BOOTSTRAP = load({"UBS_KAFKA": KAFKA}).kafka_bootstrap  # the app's own reading of the broker list
#: Brokers in the cluster the tests run against; topics are replicated on up to three of them.
BROKERS = len(BOOTSTRAP.split(","))
REPLICATION = int(os.environ.get("UBS_TOPIC_REPLICATION_FACTOR") or min(BROKERS, 3))


def cql_settings(**overrides: str) -> Settings:
    """The CQL settings of the tests' own database clients: the workers' UBS_CQL_* variables, read as
    they read them, with ``overrides`` (UBS_* names)."""
    return load({**{name: value for name, value in os.environ.items() if name.startswith("UBS_CQL_")}, **overrides})


CQL_SETTINGS = cql_settings()
CQL_HOSTS = list(CQL_SETTINGS.cql_hosts)
CQL_PORT = CQL_SETTINGS.cql_port
#: The secured stack's state directory when the tests run against it (``make test-secure`` sources
#: .stack/secure/env, which names it): the client configs of its users are there. None on the plain stack.
SECURE_HOME: Optional[Path] = Path(os.environ["STACK_SECURE_HOME"]) if os.environ.get("STACK_SECURE_HOME") else None
PARTITIONS = 8
#: Seconds without progress on an input partition with pending records before a worker acts (UBS_STALL_S).
STALL_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_user_id() -> int:
    """A user id no other test or run has used (60 random bits)."""
    return uuid.uuid4().int >> 68


@dataclass
class World:
    """Names shared by every worker of one test run."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def prefix(self) -> str:
        return f"it-{self.tag}."

    @property
    def app_id(self) -> str:
        return f"ubscore-it-{self.tag}"

    @property
    def keyspace(self) -> str:
        return f"ubscore_it_{self.tag}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"


class Worker:
    """One ``python -m app worker`` process with its own web port and data directory."""

    def __init__(
        self,
        world: World,
        data_dir: Path,
        log_path: Path,
        extra_env: Optional[Dict[str, str]] = None,
        loglevel: str = "info",
        port: Optional[int] = None,
    ) -> None:
        """``port``: a worker started where another one stopped is that worker restarted (same address,
        so the same static group member, app.settings.group_instance_id); a new port is a new worker."""
        self.world = world
        self.loglevel = loglevel
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """Its gateway, https when it is given a certificate (UBS_WEB_TLS_CERTFILE)."""
        scheme = "https" if self.extra_env.get("UBS_WEB_TLS_CERTFILE") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def trust(self) -> Optional[ssl.SSLContext]:
        """How the tests check its https gateway: against its UBS_WEB_TLS_CAFILE (None for plain http)."""
        if not self.url.startswith("https"):
            return None
        return ssl.create_default_context(cafile=self.extra_env.get("UBS_WEB_TLS_CAFILE"))

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "UBS_KAFKA": KAFKA,
                "UBS_TOPIC_REPLICATION_FACTOR": str(REPLICATION),
                "UBS_APP_ID": self.world.app_id,
                "UBS_TOPIC_PREFIX": self.world.prefix,
                "UBS_KEYSPACE": self.world.keyspace,
                "UBS_WEB_PORT": str(self.port),
                "UBS_DATA_DIR": str(self.data_dir),
                "UBS_STORE": "rocksdb://",
                "UBS_PARTITIONS": str(PARTITIONS),
                "PYTHONUNBUFFERED": "1",
                # Tests wait two minutes at most: a stalled input must be noticed well before that.
                "UBS_STALL_S": str(STALL_S),
                # Rebuilds in the tests are small: most partitions take the bulk load, the smallest Faust's path.
                "UBS_BULK_RECOVERY_MIN_RECORDS": "50",
                # Lag is read often enough for a test under load to see it rise and fall.
                "UBS_LAG_INTERVAL_S": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> "Worker":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", self.loglevel],
            cwd=REPO,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def health(self) -> Optional[Dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2, context=self.trust()) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, partitions: Optional[int] = None, timeout: float = 120.0) -> Dict[str, Any]:
        """Until /health answers ok and (if given) this many partitions are assigned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; log:\n{self.tail()}")
            health = self.health()
            if health and health.get("status") == "ok" and not health.get("rebalancing"):
                if partitions is None or len(health.get("partitions", [])) == partitions:
                    return health
            time.sleep(0.5)
        raise TimeoutError(f"worker on {self.url} not ready in {timeout}s; log:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def kafka_tool_login(user: str) -> Path:
    """The client config a stack/bin/kafka-* tool logs in with as ``user`` on the secured stack."""
    assert SECURE_HOME is not None, "only the secured stack has logins"
    return SECURE_HOME / f"{user}.properties"


def operator_login() -> List[str]:
    """A stack/bin/kafka-* tool's login as an operator: none on the plain stack, admin's on the secured one."""
    return [] if SECURE_HOME is None else ["--command-config", str(kafka_tool_login("admin"))]


def allow_producer(topic: str) -> None:
    """Lets the secured stack's producer principal write ``topic``, the grant a deployment gives it for its own name.

    The stack's ACLs name the default topics; a test world's operations topic has a
    prefix of its own, so each world grants it, as admin, exactly as docs/security-acls.md says.
    """
    command = [str(REPO / "stack/bin/kafka-acls"), "--bootstrap-server", BOOTSTRAP, *operator_login()]
    command += ["--add", "--allow-principal", "User:producer"]
    command += ["--operation", "Write", "--operation", "Describe", "--topic", topic]
    subprocess.run(command, capture_output=True, check=True, timeout=120)


@contextlib.contextmanager
def ready_worker(world: World, base: Path) -> Iterator[Worker]:
    """One worker of ``world`` under ``base``, ready with every partition, stopped (its log tail shown) after."""
    worker = Worker(world, base / "data", base / "worker.log").start()
    try:
        worker.wait_ready(partitions=PARTITIONS)
        yield worker
    finally:
        worker.stop()
        print(f"\n--- worker log tail ({worker.log_path}) ---\n{worker.tail(30)}")


async def read_topic(
    topic: str, until: Optional[Callable[[List[Record]], bool]] = None, timeout: float = 60.0
) -> List[Record]:
    """A topic from the beginning: until ``until(messages)`` holds after a poll, or without it to its end.

    Waits for the topic to exist. The condition is checked after each poll, never
    before the first; one that holds for an empty list may therefore return after a
    poll that brought nothing, so conditions should ask for what must be there.
    """
    condition = None if until is None else (lambda records: until([(r.key, r.value) for r in records]))
    records = await topic_reader.read_topic(BOOTSTRAP, topic, until=condition, timeout_s=timeout)
    return [(record.key, record.value) for record in records]


def events_of(messages: Iterable[Tuple[Optional[bytes], bytes]], user_ids: Iterable[int]) -> List[Dict[str, Any]]:
    wanted = {str(u).encode() for u in user_ids}
    return [json.loads(value) for key, value in messages if key in wanted]


async def produce(topic: str, items: Iterable[Tuple[Optional[bytes], bytes]]) -> None:
    producer = new_producer(BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def workload(
    ops: int, users: int, seed: int = 7, faults: bool = False, expiring: bool = True, orders: bool = True
) -> List[Tuple[Optional[bytes], bytes]]:
    """A deterministic mix of operations keyed by user: every user funded first, then random kinds
    (transfers across partitions included), and orders' holds: opened (some expiring within a
    minute), traded against each other with fees, captured, released and reused. With ``faults``,
    also client retries (same op_id), unkeyed messages (re-routed by the agent) and poison
    messages (dead-lettered). Without ``expiring``, no hold expires: the tables then change only
    with the input, for tests that compare them at two moments. Without ``orders``, no holds and
    no trades: the benchmarks' workload, the same as before orders existed."""
    import random

    rng = random.Random(seed)
    hold_rng = random.Random(seed + 1)  # a stream of its own: the other draws stay what each seed drew before
    ids = [fresh_user_id() for _ in range(users)]
    holds: Dict[int, List[Tuple[str, int]]] = {}
    messages: List[Tuple[Optional[bytes], bytes]] = []
    for i, user in enumerate(ids):
        messages.append((user_key(user), _operation(f"fund-{i}", "deposit", user, 1, 1_000_000)))
        messages.append((user_key(user), _operation(f"fund2-{i}", "deposit", user, 2, 500_000)))
    n = 0
    while len(messages) < ops:
        n += 1
        user = rng.choice(ids)
        kind = rng.choice(["deposit", "withdraw", "lock", "unlock", "transfer", "transfer"])
        extra: Dict[str, Any] = {}
        if kind == "transfer":
            payee = rng.choice(ids)
            if payee == user:
                continue
            extra = {"to_user_id": payee, "source": rng.choice(["available", "available", "locked"])}
        amount = rng.randint(1, 5000)  # drawn before the asset, so that every seed keeps its workload
        body = _operation(f"op-{n}", kind, user, rng.choice([1, 1, 2]), amount, **extra)
        messages.append((user_key(user), body))
        if orders and hold_rng.random() < 0.3:
            messages.append((user_key(user), _hold_operation(hold_rng, n, user, ids, holds, expiring)))
        if faults:
            messages.extend(_misbehaviour(rng.random(), n, user, body))
    return messages


def _hold_operation(
    rng: Any, n: int, user: int, ids: List[int], holds: Dict[int, List[Tuple[str, int]]], expiring: bool
) -> bytes:
    """One operation on a user's orders: open one (a third expire within a minute), trade one against
    another user's, fill one by transfer, reuse or cancel one."""
    own = holds.setdefault(user, [])
    roll = rng.random()
    if not own or roll < 0.3:
        hold_id, asset = f"order-{n}", rng.choice([1, 2])
        own.append((hold_id, asset))
        extra: Dict[str, Any] = {"hold_id": hold_id}
        if rng.random() < 0.33 and expiring:
            extra["expires_at_ms"] = int(time.time() * 1000) + rng.randint(1_000, 60_000)
        return _operation(f"hold-{n}", "lock", user, asset, rng.randint(1, 3000), **extra)
    bids = [h for h, a in own if a == 2]
    asks = [(other, h) for other in ids if other != user for h, a in holds.get(other, []) if a == 1]
    if roll < 0.55 and bids and asks:
        return _trade(rng, n, user, rng.choice(bids), rng.choice(asks), ids)
    hold_id, asset = rng.choice(own)
    if roll < 0.7:
        payee = rng.choice([other for other in ids if other != user])
        extra = {"hold_id": hold_id, "to_user_id": payee, "source": "locked"}
        return _operation(f"fill-{n}", "transfer", user, asset, rng.randint(1, 1500), **extra)
    if roll < 0.8:
        return _operation(f"reuse-{n}", "lock", user, asset, rng.randint(1, 100), hold_id=hold_id)
    body = {"op_id": f"cancel-{n}", "kind": "unlock", "user_id": user, "asset": asset, "hold_id": hold_id}
    if roll < 0.9:
        body["amount"] = rng.randint(1, 1500)
    return json.dumps(body).encode()


def _trade(rng: Any, n: int, buyer: int, bid: str, ask: Tuple[int, str], ids: List[int]) -> bytes:
    """A fill of the buyer's bid (quote: asset 2) against a seller's ask (base: asset 1), fees to a third user."""
    seller, ask_id = ask
    base_amount, quote_amount = rng.randint(1, 800), rng.randint(1, 1500)
    body: Dict[str, Any] = {
        "op_id": f"trade-{n}",
        "kind": "trade",
        "user_id": buyer,
        "buyer": {"user_id": buyer, "hold_id": bid},
        "seller": {"user_id": seller, "hold_id": ask_id},
        "base_asset": 1,
        "quote_asset": 2,
        "base_amount": base_amount,
        "quote_amount": quote_amount,
        "release_rest": {"buyer": rng.random() < 0.2, "seller": rng.random() < 0.2},
    }
    others = [other for other in ids if other not in (buyer, seller)]
    if others and rng.random() < 0.7:
        body.update(buyer_fee=rng.randint(0, base_amount // 10), seller_fee=rng.randint(0, quote_amount // 10))
        body["fee_account"] = rng.choice(others)
    return json.dumps(body).encode()


def _operation(op_id: str, kind: str, user: int, asset: int, amount: int, **extra: Any) -> bytes:
    body = {"op_id": op_id, "kind": kind, "user_id": user, "asset": asset, "amount": amount, **extra}
    return json.dumps(body).encode()


def _misbehaviour(roll: float, n: int, user: int, body: bytes) -> List[Tuple[Optional[bytes], bytes]]:
    """What a careless client adds after an operation, with small probabilities: a retry, an
    unkeyed operation, a message that is not JSON, an invalid amount."""
    if roll < 0.03:
        return [(user_key(user), body)]
    if roll < 0.04:
        return [(None, _operation(f"nokey-{n}", "deposit", user, 1, 7))]
    if roll < 0.05:
        return [(user_key(user), b'{"op_id": "poison-' + str(n).encode() + b'", broken')]
    if roll < 0.06:
        return [(user_key(user), _operation(f"bad-{n}", "deposit", user, 1, -5))]
    return []


async def produce_paced(topic: str, messages: List[Tuple[Optional[bytes], bytes]], per_second: float) -> None:
    """Produce at a steady rate, so that rebalances happen while operations flow."""
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        for index, (key, value) in enumerate(messages):
            due = start + index / per_second
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def world_settings(worker: "Worker") -> Any:
    """The Settings a worker of this world runs with (topic prefix, keyspace...)."""
    from app.settings import load

    return load(worker.env())


async def exits_for_restart(worker: "Worker", timeout: float) -> None:
    """The worker's watch resumed a stalled partition first, then exited 70 for its supervisor."""
    assert worker.process is not None
    status = await asyncio.to_thread(worker.process.wait, timeout)
    assert status == 70, worker.tail()
    log = worker.log_path.read_text()
    assert log.index("action=resume") < log.index("action=exit"), worker.tail()


async def verify_eventually(worker: "Worker", timeout: float = 120.0, worker_url: Optional[str] = None) -> Any:
    """Run the verifier until every invariant holds or the time is up; return the last report."""
    from app.tools.verifier import verify

    settings = world_settings(worker)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            report = await verify(settings, worker_url or worker.url, with_database=True)
        except Exception:  # noqa: BLE001 - a table or topic not created yet: try again until the deadline
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(2)
            continue
        if report.ok or asyncio.get_running_loop().time() > deadline:
            return report
        await asyncio.sleep(2)
