"""The holds and account views over hold rows: pages of ``?limit=`` after ``?after=``, the account's first holds."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest
from yarl import URL

from app.partitioning import user_key
from app.tables import accounts
from app.web.accounts import AccountView, HoldsView

from .conftest import Ledger, Request

USER = 11
HOLDS = 250


async def get(app: Any, view: Any, path_and_query: str) -> Tuple[int, Dict[str, Any]]:
    user_id = URL(path_and_query).path.split("/")[2]
    response = await view(app, app.web).get(Request(path_and_query), user_id)
    return response.status, json.loads(response.body)


async def many_holds(ledger: Ledger, ids: List[str]) -> None:
    """An account whose holds a row written before holds had rows carries; a deposit moves them to rows."""
    carried = {hold_id: {"asset": 1, "remaining": 1} for hold_id in ids}
    balances = {"1": {"available": 0, "locked": len(ids)}}
    accounts.data[user_key(USER)] = {"seq": 1, "balances": balances, "holds": carried}
    await ledger.submit(op_id="d", kind="deposit", user_id=USER, asset=1, amount=1)


async def pages(app: Any, first: str) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    page: Any = first
    while page is not None:
        status, body = await get(app, HoldsView, page)
        assert status == 200, body
        assert len(body["holds"]) <= 100
        found.extend(body["holds"])
        page = body["next"]
    return found


async def test_the_holds_view_pages_through_every_open_hold_in_hold_id_order(here: Any, ledger: Ledger) -> None:
    ids = [f"order-{i:04d}" for i in range(HOLDS)] + ["a+b&c=d", "z%20"]
    await many_holds(ledger, ids)
    await ledger.submit(op_id="o", kind="lock", user_id=USER, asset=1, amount=1, hold_id="fresh")
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds?limit=100")
    assert (status, body["user_id"], body["seq"], len(body["holds"])) == (200, USER, 3, 100)
    assert body["next"] == f"/accounts/{USER}/holds?limit=100&after=order-0097"  # after a+b&c=d and fresh
    listed = await pages(here, f"/accounts/{USER}/holds?limit=100")
    assert [hold["hold_id"] for hold in listed] == sorted(ids + ["fresh"])
    assert listed[0] == {"hold_id": "a+b&c=d", "asset": 1, "remaining": 1, "expires_at_ms": None}
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds")  # 100 by default
    assert len(body["holds"]) == 100
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds?limit=1000&after=order-0248")
    assert [hold["hold_id"] for hold in body["holds"]] == ["order-0249", "z%20"] and body["next"] is None


async def test_a_page_after_an_id_with_url_characters_follows_its_link(here: Any, ledger: Ledger) -> None:
    await many_holds(ledger, ["a+b&c=d", "a+b&c=e", "b"])
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds?limit=1")
    assert body["next"] == f"/accounts/{USER}/holds?limit=1&after=a%2Bb%26c%3Dd"
    assert await pages(here, f"/accounts/{USER}/holds?limit=1") == [
        {"hold_id": hold_id, "asset": 1, "remaining": 1, "expires_at_ms": None}
        for hold_id in ["a+b&c=d", "a+b&c=e", "b"]
    ]


async def test_a_row_that_still_carries_its_holds_is_paged_the_same(here: Any) -> None:
    carried = {f"h{i}": {"asset": 2, "remaining": i + 1} for i in range(5)}
    accounts.data[user_key(USER)] = {"seq": 4, "balances": {"2": {"available": 0, "locked": 15}}, "holds": carried}
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds?limit=2&after=h1")
    assert [hold["hold_id"] for hold in body["holds"]] == ["h2", "h3"]
    assert body["next"] == f"/accounts/{USER}/holds?limit=2&after=h3"


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("limit=0", "limit", "invalid_limit"),
        ("limit=1001", "limit", "invalid_limit"),
        ("limit=ten", "limit", "invalid_limit"),
        ("limit=-1", "limit", "invalid_limit"),
        ("after=", "after", "invalid_after"),
        ("after=a%20b", "after", "invalid_after"),
        ("after=" + "x" * 65, "after", "invalid_after"),
        ("limit=1&limit=2", "limit", "invalid_query"),
        ("offset=3", "offset", "invalid_query"),
    ],
)
async def test_a_bad_page_is_refused_naming_its_field(here: Any, query: str, field: str, reason: str) -> None:
    status, body = await get(here, HoldsView, f"/accounts/{USER}/holds?{query}")
    assert (status, body["field"], body["error"]) == (422, field, reason)


async def test_the_account_lists_its_first_holds_and_says_there_are_more(here: Any, ledger: Ledger) -> None:
    await many_holds(ledger, [f"order-{i:04d}" for i in range(HOLDS)])
    status, body = await get(here, AccountView, f"/accounts/{USER}")
    assert status == 200 and body["holds_more"] is True
    assert [hold["hold_id"] for hold in body["holds"]] == [f"order-{i:04d}" for i in range(100)]
    assert body["balances"] == {"1": {"available": 1, "locked": HOLDS}}
    await ledger.submit(op_id="o", kind="lock", user_id=12, asset=1, amount=1, hold_id="x")  # refused: no funds
    status, body = await get(here, AccountView, "/accounts/12")
    assert (status, body["holds"]) == (200, []) and "holds_more" not in body
