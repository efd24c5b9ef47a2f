"""A worker cut off from its group coordinator stops vouching for its partitions (app.frame.ownership), and
``?min_seq=`` answers an account only once it includes the write a client was answered (app.web.accounts).

The silence is simulated by moving the tracker's clock, not by sleeping: the agent tests' tracker (conftest,
``vouching``) has just heard from the coordinator and its clock stands still until a test moves it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from yarl import URL

from app.agents.waiters import account_waiters
from app.frame import ownership
from app.settings import settings
from app.web import accounts, at_owner, routing, waiting
from app.web.accounts import AccountView, HoldsView
from app.web.health import HealthView
from app.web.operations import OperationResultView

from .conftest import Ledger, Request

USER = 21


@pytest.fixture()
def ready(test_app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A running worker with its tables recovered, as /health sees it."""

    class Consumer:
        state = "running"

        def assignment(self) -> set:
            return set()

    monkeypatch.setattr(test_app, "_consumer", Consumer())
    recovery = test_app.tables.recovery
    was_set = recovery.completed.is_set()
    recovery.completed.set()
    yield test_app
    if not was_set:
        recovery.completed.clear()


async def answer(app: Any, view: Any, path_and_query: str, *args: str) -> Tuple[int, Dict[str, Any], Any]:
    response = await view(app, app.web).get(Request(path_and_query), *args)
    return response.status, json.loads(response.body), response.headers


async def account(app: Any, query: str = "") -> Tuple[int, Dict[str, Any], Any]:
    return await answer(app, AccountView, f"/accounts/{USER}{query}", str(USER))


def silence(tracker: ownership.Ownership, seconds: float) -> None:
    """The coordinator has not answered for ``seconds``."""
    tracker.clock.now = tracker.last_heard + seconds  # type: ignore[attr-defined]  # the tests' StillClock


# --- /health ------------------------------------------------------------------------------------


async def test_health_says_partitioned_past_the_bound_and_ok_again_once_heard(
    ready: Any, vouching: ownership.Ownership
) -> None:
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"], body["coordinator_silence_s"]) == (200, "ok", 0.0)
    assert body["ownership_bound_s"] == settings.ownership_bound_s == 15.0
    silence(vouching, 15.0)
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"]) == (200, "ok")  # at the bound: still vouched for
    silence(vouching, 15.1)
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"], body["coordinator_silence_s"]) == (503, "partitioned", 15.1)
    vouching.heard()
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"]) == (200, "ok")


async def test_before_its_first_assignment_a_worker_keeps_its_usual_statuses(
    ready: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ownership, "tracker", ownership.Ownership(15.0))
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"], body["coordinator_silence_s"]) == (200, "ok", None)


# --- reads --------------------------------------------------------------------------------------


async def test_reads_are_refused_past_the_bound_with_retry_after_and_served_again_once_heard(
    here: Any, ledger: Ledger, vouching: ownership.Ownership
) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    status, body, _ = await account(here)
    assert (status, body["seq"], body["balances"]["1"]["available"]) == (200, 1, 100)
    silence(vouching, 16.0)
    reads = [
        (AccountView, f"/accounts/{USER}", (str(USER),)),
        (HoldsView, f"/accounts/{USER}/holds", (str(USER),)),
        (OperationResultView, f"/operations/{USER}/d-1", (str(USER), "d-1")),
        (OperationResultView, f"/operations/{USER}/d-1?wait_s=5", (str(USER), "d-1")),
    ]
    for view, path, args in reads:
        started = time.monotonic()
        status, body, headers = await answer(here, view, path, *args)
        assert (status, body["error"], headers["Retry-After"]) == (503, "not_owner_confirmed", "1"), path
        assert body["coordinator_silence_s"] == 16.0 and body["ownership_bound_s"] == 15.0
        assert "balances" not in body and "seq" not in body
        assert time.monotonic() - started < 1.0  # a wait refuses at once too
    vouching.heard()
    status, body, _ = await account(here)
    assert (status, body["seq"]) == (200, 1)


async def test_a_wait_stops_vouching_when_the_bound_passes_during_it(
    here: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = ownership.Ownership(15.0)  # the real clock: the bound passes 0.2 s into the wait
    tracker.heard(time.monotonic() - 14.8)
    monkeypatch.setattr(ownership, "tracker", tracker)
    started = time.monotonic()
    status, body, headers = await answer(
        here, OperationResultView, f"/operations/{USER}/never?wait_s=5", str(USER), "never"
    )
    assert (status, body["error"], headers["Retry-After"]) == (503, "not_owner_confirmed", "1")
    assert 0.15 < time.monotonic() - started < 2.0
    tracker.heard(time.monotonic() - 14.8)
    started = time.monotonic()
    status, body, _ = await answer(here, AccountView, f"/accounts/{USER}?min_seq=1", str(USER))
    assert (status, body["error"]) == (503, "not_owner_confirmed")
    assert 0.15 < time.monotonic() - started < 2.0


async def test_a_read_the_owner_refuses_as_unconfirmed_is_routed_again_to_the_new_owner(
    here: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    old, new = URL("http://10.0.0.9:6066"), URL(settings.canonical_url)
    owners = [old, old, new]
    forwarded: List[URL] = []

    async def forward(view: Any, request: Any, owner: URL) -> Any:
        forwarded.append(owner)
        body = {"error": "not_owner_confirmed", "field": None, "message": "cut off"}
        return view.json(body, status=503, headers={"Retry-After": "1"})

    monkeypatch.setattr(routing, "owner_of", lambda user_id: owners.pop(0) if len(owners) > 1 else owners[0])
    monkeypatch.setattr(routing, "is_local", lambda owner: owner == new)
    monkeypatch.setattr(routing, "forward", forward)
    monkeypatch.setattr(at_owner, "REROUTE_RETRY_S", 0.01)
    status, body, _ = await account(here)
    assert (status, body["seq"], forwarded) == (200, 1, [old, old])
    # An owner that goes on refusing: its refusal is the answer, after REROUTE_S.
    owners[:] = [old]
    monkeypatch.setattr(at_owner, "REROUTE_S", 0.1)
    status, body, headers = await account(here)
    assert (status, body["error"], headers["Retry-After"]) == (503, "not_owner_confirmed", "1")


async def test_a_submit_waiting_here_ends_at_once_when_this_worker_stops_vouching(
    here: Any, vouching: ownership.Ownership
) -> None:
    silence(vouching, 16.0)
    started = time.monotonic()
    waited = await waiting.wait_result(USER, "never", 5.0)
    assert waited == waiting.Waited(None, unconfirmed=True)
    assert time.monotonic() - started < 1.0


# --- a rebalance under way ----------------------------------------------------------------------


async def test_health_says_recovering_for_the_whole_rebalance(ready: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ready, "rebalancing", True)  # revoked, and recovery not started yet
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"], body["rebalancing"]) == (503, "recovering", True)
    monkeypatch.setattr(ready, "rebalancing", False)
    status, body, _ = await answer(ready, HealthView, "/health")
    assert (status, body["status"]) == (200, "ok")


async def test_no_read_is_answered_while_a_rebalance_brings_the_tables_up_to_date(
    here: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    monkeypatch.setattr(at_owner, "SETTLE_WAIT_S", 0.2)
    monkeypatch.setattr(here, "rebalancing", True)
    for view, path, args in [
        (AccountView, f"/accounts/{USER}", (str(USER),)),
        (HoldsView, f"/accounts/{USER}/holds", (str(USER),)),
        (OperationResultView, f"/operations/{USER}/d-1", (str(USER), "d-1")),
    ]:
        started = time.monotonic()
        status, body, headers = await answer(here, view, path, *args)
        assert (status, body["error"], headers["Retry-After"]) == (503, "not_ready", "1"), path
        assert "seq" not in body and "balances" not in body
        assert 0.15 < time.monotonic() - started < 2.0  # the rebalance was waited out for SETTLE_WAIT_S

    async def settles() -> None:
        await asyncio.sleep(0.1)
        here.rebalancing = False

    monkeypatch.setattr(at_owner, "SETTLE_WAIT_S", 5.0)
    settled = asyncio.ensure_future(settles())
    status, body, _ = await account(here)  # a rebalance that ends within the wait: the answer comes after it
    await settled
    assert (status, body["seq"]) == (200, 1)


async def test_a_min_seq_wait_ends_refused_when_a_rebalance_begins_during_it(
    here: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)

    async def rebalance_begins() -> None:
        await asyncio.sleep(0.1)
        here.rebalancing = True
        account_waiters.wake([str(USER).encode()])  # the next look comes at once

    monkeypatch.setattr(here, "rebalancing", False)
    began = asyncio.ensure_future(rebalance_begins())
    status, body, headers = await account(here, "?min_seq=2")
    await began
    assert (status, body["error"], headers["Retry-After"]) == (503, "not_ready", "1")
    assert "seq" not in body


def test_a_forwarded_refusal_is_told_from_other_503s(test_app: Any) -> None:
    view = AccountView(test_app, test_app.web)
    assert routing.refused_as_unconfirmed(view.json({"error": "not_owner_confirmed"}, status=503))
    assert not routing.refused_as_unconfirmed(view.json({"error": "overloaded"}, status=503))
    assert not routing.refused_as_unconfirmed(view.json({"error": "not_owner_confirmed"}, status=200))
    assert not routing.refused_as_unconfirmed(view.text("<html>", status=503))


# --- ?min_seq= ----------------------------------------------------------------------------------


async def test_min_seq_reached_answers_at_once_with_the_applied_offset(here: Any, ledger: Ledger) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    await ledger.submit(op_id="d-2", kind="deposit", user_id=USER, asset=1, amount=50)
    for query in ("", "?min_seq=0", "?min_seq=1", "?min_seq=2"):
        status, body, _ = await account(here, query)
        assert (status, body["seq"], body["balances"]["1"]["available"]) == (200, 2, 150), query
        assert isinstance(body["applied_offset"], int) and isinstance(body["partition"], int)
    status, body, _ = await answer(here, HoldsView, f"/accounts/{USER}/holds?min_seq=2", str(USER))
    assert (status, body["seq"], body["holds"]) == (200, 2, [])


async def test_min_seq_waits_for_the_checkpoint_that_writes_the_account(here: Any, ledger: Ledger) -> None:
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    reading = asyncio.create_task(account(here, "?min_seq=2"))
    await asyncio.sleep(0.1)
    assert not reading.done()  # seq 1 here: the read waits instead of answering the old balance
    await ledger.submit(op_id="w-1", kind="withdraw", user_id=USER, asset=1, amount=60)
    status, body, _ = await asyncio.wait_for(reading, 5)
    assert (status, body["seq"], body["balances"]["1"]["available"]) == (200, 2, 40)
    assert waiting.waits.held == 0


async def test_min_seq_not_reached_in_time_is_refused_with_the_seq_reached(
    here: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "settings", dataclasses.replace(settings, wait_timeout_s=0.2))
    await ledger.submit(op_id="d-1", kind="deposit", user_id=USER, asset=1, amount=100)
    status, body, headers = await account(here, "?min_seq=3")
    assert (status, body["error"], body["field"], headers["Retry-After"]) == (503, "seq_not_reached", "min_seq", "1")
    assert (body["seq"], body["min_seq"]) == (1, 3) and "balances" not in body
    status, body, _ = await account(here)  # without min_seq, what is here
    assert (status, body["seq"]) == (200, 1)
    status, body, _ = await answer(here, AccountView, "/accounts/77?min_seq=1", "77")  # a user never seen
    assert (status, body["error"], body["seq"]) == (503, "seq_not_reached", 0)


@pytest.mark.parametrize("raw", ["-1", "one", "1.5", "", "99999999999999999999", " 1"])
async def test_a_bad_min_seq_is_refused_naming_it(here: Any, raw: str) -> None:
    status, body, _ = await account(here, f"?min_seq={raw}")
    assert (status, body["error"], body["field"]) == (400, "invalid_query", "min_seq")
    status, body, _ = await answer(here, HoldsView, f"/accounts/{USER}/holds?min_seq={raw}", str(USER))
    assert (status, body["field"]) == (422, "min_seq")  # the holds view answers every bad query with 422


async def test_the_account_view_refuses_unknown_query_parameters(here: Any) -> None:
    status, body, _ = await account(here, "?min_sequence=1")
    assert (status, body["error"], body["field"]) == (400, "invalid_query", "min_sequence")
