"""The operator commands on the real stack, run as an operator runs them: ``ubscore`` and ``faust -A app``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from app.partitioning import user_key

from .harness import REPO, Worker, World, fresh_user_id, produce

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


async def run(
    worker: Worker, *args: str, stdin: str = "", env: Dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``ubscore ARGS`` with the worker's environment (``faust ...`` when the first argument is ``faust``)."""
    command = [str(BIN / "faust"), "-A", "app", *args[1:]] if args[0] == "faust" else [str(BIN / "ubscore"), *args]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        cwd=REPO,
        env={**worker.env(), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (never a traceback)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


async def test_submit_by_flags_and_json_then_account_shows_the_balance(worker: Worker) -> None:
    user = fresh_user_id()
    done = await run(worker, "submit", "--kind", "deposit", "--user", str(user), "--asset", "1", "--amount", "1500",
                     "--op-id", "d-1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["available"] == 1500
    body = json.dumps({"op_id": "l-1", "kind": "lock", "user_id": user, "asset": 1, "amount": 200, "hold_id": "h"})
    done = await run(worker, "submit", "--json-body", "-", stdin=body)
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["status"], json.loads(done.stdout)["locked"]) == ("accepted", 200)
    generated = await run(worker, "submit", "--kind", "withdraw", "--user", str(user), "--asset", "1", "--amount",
                          "300", "--no-wait")  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["status"] == "submitted"
    op_id = json.loads(generated.stdout)["op_id"]
    assert op_id in generated.stderr  # the generated op_id is told, for a retry
    float_amount = {"op_id": "w-f", "kind": "withdraw", "user_id": user, "asset": 1, "amount": 1.5}
    refused = await run(worker, "submit", "--json-body", json.dumps(float_amount))
    assert refused.returncode == 1
    assert "422 invalid_amount (amount)" in one_line(refused)

    deadline = time.monotonic() + 30
    while True:
        shown = json.loads((await run(worker, "account", str(user), "--json")).stdout)
        if shown["seq"] == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert shown["balances"]["1"] == {"available": 1000, "locked": 200}
    table = await run(worker, "account", str(user))
    assert table.returncode == 0
    assert table.stdout.splitlines()[:3] == [
        f"user {user}  seq 3",
        "asset  available  locked",
        "    1       1000     200",
    ]
    through_faust = await run(worker, "faust", "--json", "account", str(user))
    assert through_faust.returncode == 0, through_faust.stderr
    assert json.loads(through_faust.stdout) == shown


async def test_account_of_an_unknown_user_and_a_silent_worker_are_one_line(worker: Worker) -> None:
    unknown = await run(worker, "account", str(fresh_user_id()))
    assert unknown.returncode == 1
    assert "404 unknown_user" in one_line(unknown)
    unknown = await run(worker, "faust", "account", str(fresh_user_id()))
    assert unknown.returncode == 1
    assert one_line(unknown).startswith("faust account: 404 unknown_user")
    silent = await run(worker, "account", "1", "--worker", "http://127.0.0.1:9")
    assert silent.returncode == 1
    assert "worker http://127.0.0.1:9 did not answer" in one_line(silent)


async def test_tail_sees_a_fresh_users_events(worker: Worker) -> None:
    user = fresh_user_id()
    for n in range(3):
        done = await run(worker, "submit", "--kind", "deposit", "--user", str(user), "--asset", "1", "--amount",
                         str(10 + n), "--op-id", f"t-{n}")  # fmt: skip
        assert done.returncode == 0, done.stderr
    tail = await run(worker, "tail", str(user), "--from-beginning", "--limit", "3")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert [line.split("  ", 1)[1].split()[:2] for line in lines] == [["seq=1", "op_id=t-0"], ["seq=2", "op_id=t-1"],
                                                                      ["seq=3", "op_id=t-2"]]  # fmt: skip
    assert "available=33" in lines[-1]

    following = await asyncio.create_subprocess_exec(
        str(BIN / "ubscore"), "tail", str(user), "--json", "--limit", "1",
        cwd=REPO, env=worker.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert following.stderr is not None and following.stdout is not None
        ready = await asyncio.wait_for(following.stderr.readline(), 30)  # positioned at the end: only new events
        assert f"following user {user}" in ready.decode()
        done = await run(worker, "submit", "--kind", "withdraw", "--user", str(user), "--asset", "1", "--amount", "3",
                         "--op-id", "t-new")  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = (await asyncio.wait_for(following.stdout.read(), 60)).decode()
        assert await asyncio.wait_for(following.wait(), 30) == 0
    finally:
        if following.returncode is None:
            following.kill()
    assert [json.loads(line)["op_id"] for line in out.splitlines()] == ["t-new"]


async def test_lag_shows_every_partition_of_both_consumers(world: World, worker: Worker) -> None:
    done = await run(worker, "lag", "--json")
    assert done.returncode == 0, done.stderr
    lags = json.loads(done.stdout)
    topics = [(p["topic"], p["partition"]) for p in lags["ledger"]["partitions"] + lags["sink"]["partitions"]]
    assert len(topics) == len(set(topics)) == 24
    assert {topic.removeprefix(world.prefix) for topic, _ in topics} == {
        "balance.operations",
        "balance.credits",
        "balance.events",
    }
    assert all(isinstance(p["end"], int) and p["lag"] >= 0 for p in lags["ledger"]["partitions"])
    assert sum(p["end"] for p in lags["sink"]["partitions"]) > 0
    table = await run(worker, "faust", "lag")
    assert table.returncode == 0, table.stderr
    rows, totals = table.stdout.split("\n\n")
    assert len(rows.splitlines()) == 1 + 24
    assert [line.split()[0] for line in totals.splitlines()[1:]] == ["ledger", "sink"]


async def test_dead_letter_listed_replayed_once_corrected(world: World, worker: Worker) -> None:
    user = fresh_user_id()
    poison = {"op_id": "float-1", "kind": "deposit", "user_id": user, "asset": 1, "amount": 1.5}
    await produce(world.topic("balance.operations"), [(user_key(user), json.dumps(poison).encode())])

    deadline = time.monotonic() + 60
    letters: List[dict] = []
    while not letters and time.monotonic() < deadline:
        listed = await run(worker, "dlq", "list", "--reason", "invalid_amount", "--user", str(user), "--json")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        await asyncio.sleep(0.5)
    assert len(letters) == 1 and json.loads(letters[0]["value"]) == poison
    table = await run(worker, "dlq", "list", "--user", str(user), "--since", "10m")
    assert "invalid_amount" in table.stdout and "float-1" in table.stdout

    dry = await run(worker, "dlq", "replay", "--user", str(user), "--set", "amount=5", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would send" in dry.stdout and '"amount":5' in dry.stdout
    untouched = await run(worker, "account", str(user), "--json")
    assert json.loads(untouched.stdout)["seq"] == 1  # only the rejection: the dry run sent nothing

    first = await run(worker, "dlq", "replay", "--user", str(user), "--set", "amount=5")
    assert first.returncode == 0, first.stderr
    assert " -> 200 accepted seq=2" in first.stdout and "duplicate" not in first.stdout
    again = await run(worker, "faust", "dlq", "replay", "--user", str(user), "--set", "amount=5")
    assert again.returncode == 0, again.stderr
    assert " -> 200 accepted seq=2 (duplicate" in again.stdout
    account = json.loads((await run(worker, "account", str(user), "--json")).stdout)
    assert (account["seq"], account["balances"]["1"]["available"]) == (2, 5)

    uncorrected = await run(worker, "dlq", "replay", "--user", str(user))
    assert uncorrected.returncode == 1  # the gateway refuses the float amount itself
    assert "422 invalid_amount" in uncorrected.stdout


async def test_verify_passes_on_the_worlds_pipeline(worker: Worker) -> None:
    deadline = time.monotonic() + 120
    while True:
        done = await run(worker, "verify", "--worker", worker.url)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RESULT OK" in done.stdout
    assert "verify: [5/5] database:" in done.stderr
    unreadable = await run(worker, "verify", "--no-db", env={"UBS_KAFKA": "kafka://127.0.0.1:9"})
    assert unreadable.returncode == 2
    assert "could not read" in one_line(unreadable)
