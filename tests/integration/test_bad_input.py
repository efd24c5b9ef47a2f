"""Bad input on the real stack: poison messages on the topic, and generated HTTP requests."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any, Dict, List, Optional, Tuple

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.partitioning import user_key

from .harness import Worker, World, events_of, fresh_user_id, produce, read_topic

pytestmark = pytest.mark.integration


async def test_poison_catalogue_lands_in_dlq_and_partition_keeps_going(world: World, worker: Worker) -> None:
    user = fresh_user_id()
    key = user_key(user)

    def op(**fields: Any) -> bytes:
        body = {"op_id": "p", "kind": "deposit", "user_id": user, "asset": 1, "amount": 5}
        body.update(fields)
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    catalogue: List[Tuple[str, bytes]] = [
        ("invalid_json", b"\x00\xff not json"),
        ("invalid_json", b'{"op_id": "truncated"'),
        ("invalid_body", b"[1, 2, 3]"),
        ("invalid_user_id", op(op_id="p1", user_id="abc")),
        ("invalid_amount", op(op_id="p2", amount=-5)),
        ("invalid_amount", op(op_id="p3", amount=0)),
        ("invalid_amount", op(op_id="p4", amount=1.5)),
        ("invalid_amount", op(op_id="p5", amount=2**63)),
        ("invalid_amount", op(op_id="p6", amount="9" * 400)),
        ("invalid_amount", op(op_id="p7", amount=True)),
        ("unknown_kind", op(op_id="p8", kind="mint")),
        ("missing_field", op(op_id="p9", amount=...)),
        ("missing_field", op(op_id=...)),
        ("invalid_asset", op(op_id="p10", asset=[1])),
        ("unknown_field", op(op_id="p11", credit=10**9)),
        ("body_too_large", b"{" + b" " * 900_000 + b"oversized"),
    ]
    good = op(op_id="after-all", amount=11)
    await produce(world.topic("balance.operations"), [(key, raw) for _, raw in catalogue] + [(key, good)])

    events = events_of(
        await read_topic(
            world.topic("balance.events"), lambda m: any(e["op_id"] == "after-all" for e in events_of(m, [user]))
        ),
        [user],
    )
    accepted = [e for e in events if e["status"] == "accepted"]
    assert [(e["op_id"], e["available"]) for e in accepted] == [("after-all", 11)]
    # Every bad message tied to this user got a rejected event with the reason, in order, seq 1..n.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    def letters_of(messages: List[Tuple[Optional[bytes], bytes]]) -> List[Dict[str, Any]]:
        return [json.loads(v) for k, v in messages if k == key]

    letters = letters_of(
        await read_topic(
            world.topic("balance.operations.dlq"), lambda m: len(letters_of(m)) >= len(catalogue), timeout=60
        )
    )
    assert sorted(letter["error"]["error"] for letter in letters) == sorted(reason for reason, _ in catalogue)
    oversized = next(letter for letter in letters if letter["value_truncated"])
    assert len(oversized["value"]) == 64 * 1024


# Generated request bodies: mostly wrong in some way, a few valid.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
field_values = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["op_id", "kind", "user_id", "asset", "amount", "to_user_id", "source", "extra"]),
        field_values,
        max_size=7,
    ),
    st.lists(json_scalars, max_size=3),
    json_scalars,
)


@pytest.mark.timeout(600)  # 10,000 requests, then a read of the whole operations topic
def test_ten_thousand_generated_requests_never_5xx_and_rejections_produce_nothing(world: World, worker: Worker) -> None:
    """Hypothesis draws the bodies; the requests themselves go out concurrently, 10,000 in all."""
    drawn: List[Any] = []

    @settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(bodies)
    def collect(body: Any) -> None:
        drawn.append(body)

    collect()
    rng = random.Random(5)
    fuzz_user = fresh_user_id()
    requests: List[bytes] = []
    while len(requests) < 10_000 - 50:
        body = rng.choice(drawn)
        if isinstance(body, dict) and rng.random() < 0.5:
            body = {**body, "user_id": fuzz_user}  # aim many at one user, so state changes would show
        raw = json.dumps(body).encode()
        if rng.random() < 0.05:
            raw = raw[: rng.randint(0, len(raw))]  # truncated bodies
        requests.append(raw)
    # Known-good operations of the fuzz user, so the check below has something to find.
    for n in range(50):
        good = {"op_id": f"fuzz-good-{n}", "kind": "deposit", "user_id": fuzz_user, "asset": 1, "amount": 1}
        requests.insert(rng.randrange(len(requests)), json.dumps(good).encode())
    results = asyncio.run(_post_all(worker, requests))

    server_errors = [(status, raw) for status, raw in results if status >= 500]
    assert server_errors == []
    accepted = [json.loads(raw) for status, raw in results if status == 202]
    assert all(400 <= status < 500 or status == 202 for status, _ in results)
    # Exactly the operations answered 202 reached Kafka: nothing rejected, nothing lost. Every 202
    # came after Kafka's ack, so a read to the topic's current end holds all of them.
    messages = asyncio.run(read_topic(world.topic("balance.operations")))
    on_topic = sorted(repr(json.loads(v).get("op_id")) for k, v in messages if k == user_key(fuzz_user))
    answered = sorted(repr(b["op_id"]) for b in accepted if isinstance(b, dict) and b.get("user_id") == fuzz_user)
    assert len(answered) >= 50
    assert on_topic == answered


async def _post_all(worker: Worker, requests: List[bytes]) -> List[Tuple[int, bytes]]:
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as http:

        async def one(raw: bytes) -> Tuple[int, bytes]:
            async with limit:
                async with http.post(f"{worker.url}/operations", data=raw) as response:
                    await response.read()
                    return response.status, raw

        return await asyncio.gather(*(one(raw) for raw in requests))
