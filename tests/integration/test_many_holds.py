"""A market maker on the real stack: 50,000 open holds for one user, and the worker keeps working.

Kept inside the account row, that many holds made a changelog record past Kafka's
1 MiB ``max.message.bytes`` (16,160 holds with 36-character order ids): the
checkpoint's produce failed (MessageSizeTooLargeError), the worker exited 74
and every partition it owned stopped. Each hold is a row of its own now.

``UBS_TEST_HOLDS`` sets the number of holds (past 16,200 to pass the old limit);
``UBS_TEST_APPLY_TIMEOUT_S`` how long the locks may take (600 s; the old code
needs 3000 to show its exit).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import aiohttp
import pytest

from app.kafka_clients import new_producer
from app.partitioning import partition_for, user_key
from app.tools.verifier import read_tables

from .harness import BOOTSTRAP, PARTITIONS, Worker, World, fresh_user_id, ready_worker

HOLDS = int(os.environ.get("UBS_TEST_HOLDS", "50000"))
#: How long the worker may take for all the locks (about 6 s per 10,000 here). The code before holds had
#: rows took 11 minutes to reach the 1 MiB record (16,160 holds), re-encoding every hold for each lock.
APPLY_TIMEOUT_S = float(os.environ.get("UBS_TEST_APPLY_TIMEOUT_S", "600"))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(APPLY_TIMEOUT_S + 300)]


def order_id(i: int) -> str:
    """A 36-character order id, as matching engines use (a UUID); sorted as ``i``."""
    return str(uuid.UUID(int=i))


def lock(maker: int, i: int) -> bytes:
    body = {"op_id": f"lock-{i}", "kind": "lock", "user_id": maker, "asset": 2, "amount": 1, "hold_id": order_id(i)}
    return json.dumps(body).encode()


async def produce_locks(topic: str, maker: int) -> None:
    """Every lock straight to the operations topic, in bulk, in order (one partition: the maker's)."""
    producer = new_producer(BOOTSTRAP, acks="all", linger_ms=20, enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=lock(maker, i), key=user_key(maker)) for i in range(HOLDS)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def submit(http: aiohttp.ClientSession, worker: Worker, **body: Any) -> Dict[str, Any]:
    async with http.post(f"{worker.url}/operations", params={"wait": "true"}, json=body) as response:
        answer: Dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer


async def applied(http: aiohttp.ClientSession, worker: Worker, user: int, op_id: str) -> Dict[str, Any]:
    """The result of one operation, waiting for it while the worker lives; a dead worker fails with its log."""
    deadline = asyncio.get_running_loop().time() + APPLY_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        assert worker.process is not None
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with status {worker.process.returncode}:\n{worker.tail(40)}")
        try:
            async with http.get(f"{worker.url}/operations/{user}/{op_id}", params={"wait_s": "5"}) as response:
                if response.status == 200:
                    result: Dict[str, Any] = await response.json()
                    return result
        except (aiohttp.ClientError, asyncio.TimeoutError):
            await asyncio.sleep(1)
    pytest.fail(f"no result for {op_id} in {APPLY_TIMEOUT_S} s:\n{worker.tail(40)}")


async def all_pages(http: aiohttp.ClientSession, worker: Worker, user: int) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    page: Optional[str] = f"/accounts/{user}/holds?limit=1000"
    while page is not None:
        async with http.get(f"{worker.url}{page}") as response:
            body = await response.json()
            assert response.status == 200, body
        assert len(body["holds"]) <= 1000
        found.extend(body["holds"])
        page = body["next"]
    return found


async def test_an_account_with_50000_open_holds_leaves_its_worker_working(tmp_path: Path) -> None:
    world = World()  # a world of its own: no other test's verifier folds this account
    maker, neighbour = fresh_user_id(), fresh_user_id()
    while partition_for(user_key(neighbour), PARTITIONS) != partition_for(user_key(maker), PARTITIONS):
        neighbour = fresh_user_id()
    with ready_worker(world, tmp_path) as worker:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            await submit(http, worker, op_id="fund", kind="deposit", user_id=maker, asset=2, amount=HOLDS)
            await produce_locks(world.topic("balance.operations"), maker)
            last = await applied(http, worker, maker, f"lock-{HOLDS - 1}")
            assert (last["status"], last["locked"], last["seq"]) == ("accepted", HOLDS, HOLDS + 1)

            # The maker's next operation and a neighbour's on the same partition: the worker goes on.
            later = await submit(http, worker, op_id="later", kind="deposit", user_id=maker, asset=1, amount=5)
            assert (later["status"], later["seq"]) == ("accepted", HOLDS + 2)
            other = await submit(http, worker, op_id="n", kind="deposit", user_id=neighbour, asset=2, amount=7)
            assert (other["status"], other["seq"]) == ("accepted", 1)
            cancel = await submit(http, worker, op_id="c", kind="unlock", user_id=maker, asset=2, hold_id=order_id(7))
            assert (cancel["status"], cancel["amount"], cancel["locked"]) == ("accepted", 1, HOLDS - 1)

            listed = await all_pages(http, worker, maker)
            assert [hold["hold_id"] for hold in listed] == [order_id(i) for i in range(HOLDS) if i != 7]
            assert {(hold["asset"], hold["remaining"]) for hold in listed} == {(2, 1)}
            async with http.get(f"{worker.url}/accounts/{maker}") as response:
                account = await response.json()
            assert (len(account["holds"]), account["holds_more"]) == (100, True)
            assert account["balances"]["2"] == {"available": 1, "locked": HOLDS - 1}

            tables = await read_tables(worker.url, [maker, neighbour])
            maker_table = tables[maker]
            assert maker_table is not None and len(maker_table["holds"]) == HOLDS - 1  # the verifier pages too
        assert worker.process is not None and worker.process.poll() is None
        assert "MESSAGE_SIZE_TOO_LARGE" not in worker.log_path.read_text(errors="replace")
