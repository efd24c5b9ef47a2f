"""Several workers on the real stack: partitions spread, reads routed, rebalances lose nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import aiohttp
import pytest

from app.exit_codes import RESTART_REASONS
from app.tools.supervisor import Supervisor
from app.tools.verifier import read_tables

from .harness import PARTITIONS, Worker, World, fresh_user_id, produce_paced, verify_eventually, workload

pytestmark = pytest.mark.integration

FAST_FAILOVER = {"UBS_SESSION_TIMEOUT_S": "6"}


async def wait_spread(
    workers: Sequence[Worker], timeout: float = 90.0, keeper: Optional[Supervisor] = None
) -> List[List[int]]:
    """Until the live workers own every partition exactly once, each owns some, none is rebalancing.

    The same holds for the sinks' group where the workers run sinks: the two groups settle apart.

    With a ``keeper``, a worker that exits asking to be started again is, as under ``ubscore workers``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if keeper is not None:
            keeper.poll()
        healths = [await asyncio.to_thread(w.health) for w in workers]
        parts = [sorted(h.get("partitions", [])) if h else [] for h in healths]
        if spread(parts) and all(h and not h["rebalancing"] for h in healths):
            sinks = [h["sink_partitions"] for h in healths if h and h.get("sink_partitions") is not None]
            if not sinks or spread(sinks):
                return parts
        if loop.time() > deadline:
            raise TimeoutError(f"partitions not spread over {len(workers)} workers: {parts}")
        await asyncio.sleep(0.5)


def spread(parts: Sequence[Sequence[int]]) -> bool:
    """Every partition owned exactly once, and every member owns some."""
    return sorted(p for ps in parts for p in ps) == list(range(PARTITIONS)) and all(parts)


def start(world: World, base: Path, name: str) -> Worker:
    return Worker(world, base / name / "data", base / f"{name}.log", extra_env=FAST_FAILOVER).start()


async def test_workers_share_partitions_and_route_reads(tmp_path: Path) -> None:
    world = World()
    a, b = start(world, tmp_path, "a"), start(world, tmp_path, "b")
    try:
        await asyncio.to_thread(a.wait_ready)
        parts = await wait_spread([a, b])
        assert all(0 < len(p) < PARTITIONS for p in parts)
        users = [fresh_user_id() for _ in range(12)]
        async with aiohttp.ClientSession() as http:
            for i, user in enumerate(users):
                entry = (a, b)[i % 2]  # any worker accepts any user and waits for the result
                async with http.post(
                    f"{entry.url}/operations",
                    params={"wait": "true"},
                    json={"op_id": f"d{i}", "kind": "deposit", "user_id": user, "asset": 1, "amount": 100 + i},
                ) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["available"] == 100 + i
            await long_polls_answer_at_the_owner(http, a, b, fresh_user_id())
            await owners_count_what_is_before_an_offset(http, a, b, users[0])
        through_a = await read_tables(a.url, users)
        through_b = await read_tables(b.url, users)
        assert through_a == through_b
        assert [through_a[u]["balances"]["1"]["available"] for u in users] == [100 + i for i in range(12)]
    finally:
        a.stop()
        b.stop()


async def both_answer_alike(one: Worker, other: Worker, users: Sequence[int], timeout: float = 60) -> None:
    """Two workers read every account at its owner alike.

    The workload's holds expire on the clock, so an expiry may land between the two
    reads: they are repeated until one pair agrees, and a real difference stays.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        through_one = await read_tables(one.url, users)
        through_other = await read_tables(other.url, users)
        if through_one == through_other or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1)
    assert through_one == through_other


async def test_a_worker_killed_and_restarted_at_its_address_keeps_its_partitions_without_a_rebalance(
    tmp_path: Path,
) -> None:
    """Static membership: the restarted worker rejoins under its old name, and nobody else rebalances."""
    world = World()
    a = Worker(world, tmp_path / "a", tmp_path / "a.log").start()
    b = Worker(world, tmp_path / "b", tmp_path / "b.log").start()
    try:
        before = await wait_spread([a, b])
        seen = len(a.log_path.read_text())
        await asyncio.to_thread(b.stop, signal.SIGKILL)
        b.start()  # the same address: the same static member of both groups
        await asyncio.to_thread(b.wait_ready)
        assert await wait_spread([a, b]) == before
        assert "Revoking previously assigned partitions" not in a.log_path.read_text()[seen:], a.tail()
    finally:
        a.stop()
        b.stop()


async def long_polls_answer_at_the_owner(http: aiohttp.ClientSession, a: Worker, b: Worker, user: int) -> None:
    """GET /operations/{user}/{op_id}?wait_s= waits for a result, on either worker, and refuses bad waits."""
    result = f"{a.url}/operations/{user}/later"
    async with http.get(result, params={"wait_s": "0.5"}) as response:
        assert response.status == 404, await response.text()
    for bad in ("-1", "nan", "1e9", "soon"):
        async with http.get(result, params={"wait_s": bad}) as response:
            assert response.status == 400 and (await response.json())["field"] == "wait_s", bad
    for bad in ("-1", "01x", "9" * 30):
        async with http.get(result, params={"offset": bad}) as response:
            assert response.status == 400 and (await response.json())["field"] == "offset", bad
    waiting = [
        asyncio.ensure_future(http.get(f"{w.url}/operations/{user}/later", params={"wait_s": "8"})) for w in (a, b)
    ]
    await asyncio.sleep(0.5)
    op = {"op_id": "later", "kind": "deposit", "user_id": user, "asset": 1, "amount": 7}
    async with http.post(f"{b.url}/operations", json=op) as response:
        assert response.status == 202, await response.text()
    for pending in waiting:
        async with await pending as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["op_id"] == "later"


async def owners_count_what_is_before_an_offset(http: aiohttp.ClientSession, a: Worker, b: Worker, user: int) -> None:
    """The 404 of a result lookup with ?offset= carries the owner's counts, however the lookup is routed."""
    for worker in (a, b):
        async with http.get(f"{worker.url}/operations/{user}/never", params={"offset": "0"}) as response:
            body = await response.json()
            # The user's partition has applied a deposit, so offset 0 is behind its cursor.
            assert response.status == 404 and body["behind"] == 0, body
            assert isinstance(body["applied_offset"], int) and body["applied_total"] >= 1, body


@pytest.mark.timeout(900)  # five spreads of up to 90 s, stops of up to 60 s, a 150 s verification
async def test_rebalances_under_load_keep_every_invariant(tmp_path: Path) -> None:
    """Join, clean leave and SIGKILL while operations flow; then the verifier must find nothing.

    The workers run under a supervisor, as in production: one that exits for a
    restart (a stalled input or recovery, app.exit_codes) is started again.
    """
    world = World()
    messages = workload(ops=3000, users=150, seed=11, faults=True)
    a = start(world, tmp_path, "a")
    workers: Dict[str, Worker] = {"a": a}
    children: List[Worker] = [a]
    keeper = Supervisor(children, restart=lambda status: status in RESTART_REASONS)
    try:
        await asyncio.to_thread(a.wait_ready, PARTITIONS)
        load = asyncio.create_task(produce_paced(world.topic("balance.operations"), messages, per_second=150))

        await asyncio.sleep(3)
        children.append(workers.setdefault("b", start(world, tmp_path, "b")))  # a worker joins
        await wait_spread([a, workers["b"]], keeper=keeper)
        children.append(workers.setdefault("c", start(world, tmp_path, "c")))  # and another
        await wait_spread([a, workers["b"], workers["c"]], keeper=keeper)
        await asyncio.to_thread(workers["b"].stop, signal.SIGTERM)  # one leaves cleanly
        await wait_spread([a, workers["c"]], keeper=keeper)
        await asyncio.sleep(1)
        await asyncio.to_thread(workers["c"].stop, signal.SIGKILL)  # one dies
        await wait_spread([a], keeper=keeper)
        c2 = Worker(world, tmp_path / "c" / "data", tmp_path / "c2.log", extra_env=FAST_FAILOVER).start()
        children.append(workers.setdefault("c2", c2))
        await wait_spread([a, c2], keeper=keeper)  # it comes back on its old files
        await load

        report = await verify_eventually(a, timeout=150)
        assert report.ok, report.summary()
        assert report.counts["transfers_accepted"] > 100
        assert report.counts["events_distinct"] >= 3000 - 100
        await both_answer_alike(a, c2, sorted(report.accounts))
    finally:
        for worker in workers.values():
            worker.stop()
        print(f"--- supervisor: exits {keeper.exits}, restarts {keeper.restarts} ---")
        for name, worker in workers.items():
            print(f"--- {name} log tail ---\n{worker.tail(15)}")
