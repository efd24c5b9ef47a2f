"""The generated hostile catalogue (tests/hostile.py) against a real worker, over HTTP and on the topic.

The worker of this module accepts bodies of up to 512 KiB, so that even the 100,000-digit
numbers and 200,000-character strings reach the parser instead of the size check; the
session worker, with the default 16 KiB, is asked too and must answer 413 or 4xx.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest
from yarl import URL

from app.partitioning import user_key
from tests.hostile import INVALID, UNTIED, VALID, Case, Catalogue

from .harness import PARTITIONS, Worker, World, events_of, fresh_user_id, produce, read_topic, verify_eventually

pytestmark = pytest.mark.integration

LARGE_BODY_BYTES = 512 * 1024


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("lenient")
    env = {"UBS_MAX_BODY_BYTES": str(LARGE_BODY_BYTES)}
    worker = Worker(World(), base / "data", base / "worker.log", extra_env=env).start()
    try:
        worker.wait_ready(partitions=PARTITIONS)
        yield worker
    finally:
        worker.stop()


async def post_all(url: str, cases: List[Case]) -> List[Tuple[Case, int, bytes]]:
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:

        async def one(case: Case) -> Tuple[Case, int, bytes]:
            async with limit:
                async with http.post(f"{url}/operations", data=case.raw or b"") as response:
                    return case, response.status, await response.read()

        return await asyncio.gather(*(one(case) for case in cases))


def wrong_answers(answers: List[Tuple[Case, int, bytes]], max_bytes: int) -> List[str]:
    wrong = []
    for case, status, body in answers:
        owed = case.owed(max_bytes)
        good = status == 202 if owed == VALID else 400 <= status < 500 and "error" in json.loads(body)
        if not good:
            wrong.append(f"{case.label}: {status} {body[:200]!r}")
    return wrong


@pytest.mark.parametrize("which", ["lenient", "default"])
async def test_every_hostile_body_gets_a_4xx_and_never_a_5xx(which: str, lenient: Worker, worker: Worker) -> None:
    target, max_bytes = (lenient, LARGE_BODY_BYTES) if which == "lenient" else (worker, 16 * 1024)
    cases = Catalogue(fresh_user_id(), fresh_user_id(), prefix=f"http-{which}").cases()
    assert {case.owed(max_bytes) for case in cases} == {VALID, INVALID, UNTIED}  # every kind is asked
    answers = await post_all(target.url, cases)
    assert wrong_answers(answers, max_bytes) == []


@pytest.mark.timeout(900)  # reads of up to 180 s and 60 s, a verification of up to 120 s
async def test_every_hostile_message_is_answered_and_its_partition_goes_on(lenient: Worker) -> None:
    """Each case is followed by a good deposit of the same user: every deposit must get its result."""
    user = fresh_user_id()
    key = user_key(user)
    cases = Catalogue(user, fresh_user_id()).cases()
    messages: List[Tuple[Optional[bytes], Optional[bytes]]] = []
    for number, case in enumerate(cases):
        good = {"op_id": f"good-{number}", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1}
        messages += [(key, case.raw), (key, json.dumps(good).encode())]
    topic = lenient.world.topic
    await produce(topic("balance.operations"), messages)  # type: ignore[arg-type]

    def results(found: List[Tuple[Optional[bytes], bytes]]) -> Dict[str, Dict]:
        return {e["op_id"]: e for e in events_of(found, [user])}

    events = results(
        await read_topic(topic("balance.events"), lambda m: f"good-{len(cases) - 1}" in results(m), timeout=180)
    )
    goods = [events.get(f"good-{n}", {}).get("status") for n in range(len(cases))]
    assert goods == ["accepted"] * len(cases)
    for case in cases:
        owed = case.owed(LARGE_BODY_BYTES)
        if owed != UNTIED:
            assert case.op_id in events, case.label
        if owed == INVALID:
            assert events[str(case.op_id)]["status"] == "rejected", case.label

    def letters(found: List[Tuple[Optional[bytes], bytes]]) -> List[Dict]:
        return [json.loads(v) for k, v in found if k == key]

    unanswered = sum(1 for case in cases if case.owed(LARGE_BODY_BYTES) != VALID)
    dead = letters(
        await read_topic(topic("balance.operations.dlq"), lambda m: len(letters(m)) >= unanswered, timeout=60)
    )
    assert len(dead) == unanswered
    assert not [d for d in dead if d["error"]["error"] == "processing_failed"]
    report = await verify_eventually(lenient)
    assert report.ok, report.summary()


HOSTILE_PATHS = [
    "/accounts/" + "9" * 5000,
    "/accounts/" + "9" * 5000 + "/events",
    "/accounts/-1",
    "/accounts/%FF",
    "/accounts/%ED%A0%80",
    "/accounts/1%00",
    "/accounts/%EF%BC%91",  # fullwidth digit one
    "/accounts/1/events?limit=" + "9" * 5000,
    "/accounts/1/events?limit=%FF",
    "/accounts/1/events?limit=1&limit=2",
    "/accounts/1/events?limit=0",
    "/accounts/1/events?surprise=1",
    "/operations/1/%FF",
    "/operations/1/%ED%A0%80",
    "/operations/1/" + "x" * 5000,
    "/operations/1/a%20b",
    "/operations/1/a%00",
    "/operations/" + "9" * 5000 + "/x",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
async def test_hostile_path_or_query_is_a_4xx(path: str, worker: Worker) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(URL(worker.url + path, encoded=True)) as response:
            body = await response.read()
            assert 400 <= response.status < 500, (response.status, body[:300])


@pytest.mark.parametrize(
    "query", ["?wait=true&wait=false", "?wait=" + "t" * 5000, "?wait=%FF", "?wiat=true", "?wait=true&x=1"]
)
async def test_hostile_query_on_submit_is_a_4xx_and_produces_nothing(query: str, worker: Worker) -> None:
    user = fresh_user_id()
    body = {"op_id": "q", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1}
    async with aiohttp.ClientSession() as http:
        async with http.post(URL(worker.url + "/operations" + query, encoded=True), json=body) as response:
            assert response.status == 400, await response.read()
        # Had the refused one been produced, it would be ahead of this one on the user's partition.
        async with http.post(f"{worker.url}/operations?wait=true", json=dict(body, op_id="after")) as response:
            assert response.status == 200, await response.read()
            assert (await response.json())["seq"] == 1


async def test_authorization_header_of_raw_bytes_is_refused_not_a_500(tmp_path: Path) -> None:
    """With a token set, a header that is not text must be a 401, as a wrong token is."""
    guarded = Worker(World(), tmp_path / "data", tmp_path / "w.log", extra_env={"UBS_API_TOKEN": "s3cret"}).start()
    try:
        await asyncio.to_thread(guarded.wait_ready, PARTITIONS)
        reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
        writer.write(
            b"POST /operations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xed\xa0\x80\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401", status_line
    finally:
        guarded.stop()
