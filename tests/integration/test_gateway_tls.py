"""TLS on the gateway, on the real stack: two workers serving https with certificates from one throwaway CA.

Every request goes to worker ``a`` for a user worker ``b`` owns, so the reads
and the wait are routed from ``a`` to ``b``, which serves nothing but https:
that they answer is the proof that the call went over TLS, checked against
``UBS_WEB_TLS_CAFILE``. A plain HTTP request to a TLS port gets no answer, and a
client that does not trust the CA gets no connection.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, Dict, Iterator, Optional, Tuple

import aiohttp
import pytest

from app.partitioning import partition_for, user_key
from app.tools.verifier import read_tables
from tests.tls_files import Pair, authority, gateway_cert

from .harness import PARTITIONS, REPO, Worker, World, fresh_user_id, world_settings
from .test_scaling import wait_spread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Cluster:
    """Two TLS workers of one world, the CA that signed them, and a user ``b`` owns."""

    def __init__(self, a: Worker, b: Worker, ca: Pair) -> None:
        self.a, self.b, self.ca = a, b, ca
        owned = set(b.health()["partitions"])  # type: ignore[index]
        self.user = next(u for u in iter(fresh_user_id, None) if partition_for(user_key(u), PARTITIONS) in owned)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("gateway-tls")
    ca = authority(base / "pki", "gateways-ca")
    world = World()
    workers = []
    for name in ("a", "b"):
        cert = gateway_cert(ca, base / "pki", name)
        env = {
            "UBS_WEB_TLS_CERTFILE": str(cert.cert),
            "UBS_WEB_TLS_KEYFILE": str(cert.key),
            "UBS_WEB_TLS_CAFILE": str(ca.cert),
        }
        workers.append(Worker(world, base / name / "data", base / f"{name}.log", extra_env=env).start())
    a, b = workers
    try:
        a.wait_ready()
        asyncio.run(wait_spread([a, b]))
        yield Cluster(a, b, ca)
    finally:
        for worker in workers:
            worker.stop()
            print(f"\n--- {worker.log_path} ---\n{worker.tail(30)}")


async def call(
    worker: Worker, method: str, path: str, body: Any = None, trust: Optional[Any] = None
) -> Tuple[int, Dict[str, Any]]:
    """A request to the worker's https gateway, checked against its CA unless ``trust`` says otherwise."""
    connector = aiohttp.TCPConnector(ssl=trust if trust is not None else worker.trust())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(method, f"{worker.url}{path}", json=body) as response:
            return response.status, await response.json(content_type=None)


def deposit(user: int, op_id: str, amount: int = 10) -> Dict[str, Any]:
    return {"op_id": op_id, "kind": "deposit", "user_id": user, "asset": 1, "amount": amount}


async def test_each_worker_serves_https_and_advertises_it(cluster: Cluster) -> None:
    for worker in (cluster.a, cluster.b):
        health = worker.health()
        assert health is not None and health["worker"] == worker.url and worker.url.startswith("https://")
        log = worker.log_path.read_text()
        assert f"gateway_tls url={worker.url}" in log and "gateway_plain_http" not in log


async def test_reads_and_waits_routed_to_the_other_worker_go_over_https(cluster: Cluster) -> None:
    a, user = cluster.a, cluster.user
    status, answer = await call(a, "POST", "/operations?wait=true", deposit(user, "tls-1"))
    assert (status, answer.get("status")) == (200, "accepted"), answer  # a waited for b's result over https
    status, account = await call(a, "GET", f"/accounts/{user}")
    assert status == 200 and account["balances"]["1"]["available"] == 10, account
    assert (await call(a, "GET", f"/operations/{user}/tls-1"))[0] == 200
    assert (await call(a, "GET", f"/accounts/{user}/holds"))[0] == 200
    assert "route_failed" not in a.log_path.read_text() and "result_lookup_failed" not in a.log_path.read_text()
    tables = await read_tables(a.url, [user], config=world_settings(a))  # ubscore verify's reads
    assert tables[user] is not None and tables[user]["seq"] == account["seq"]  # type: ignore[index]


async def test_plain_http_to_a_tls_port_gets_no_answer(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(cluster.a.url.replace("https://", "http://") + "/health") as response:
                await response.read()


async def test_a_client_that_does_not_trust_the_ca_gets_no_connection(cluster: Cluster) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await call(cluster.a, "GET", "/health", trust=True)  # the system's CAs only


def ubscore(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` from this checkout (whatever is installed) with ``env``."""
    command = [sys.executable, "-m", "app", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def test_the_commands_reach_an_https_gateway_checked_against_the_ca_file(cluster: Cluster) -> None:
    a, user = cluster.a, cluster.user
    await call(a, "POST", "/operations?wait=true", deposit(user, "tls-cli"))
    shown = await asyncio.to_thread(ubscore, a.env(), "account", str(user), "--json")  # a's own URL: https
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["user_id"] == user
    without_ca = {name: value for name, value in a.env().items() if not name.startswith("UBS_WEB_TLS_")}
    refused = await asyncio.to_thread(ubscore, without_ca, "account", str(user), "--worker", a.url)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert f"worker {a.url} did not answer: TLS: its certificate was refused" in line
