"""An account and its open holds, read from the tables of the worker that owns the user.

Both answers are bounded like their rows: an account lists its first open
holds, and the holds view pages through the rest. ``?min_seq=`` gives
read-your-writes on any worker: no answer older than the seq a client was
answered. Each answer says its partition and the last input applied there, so a
client can tell how fresh it is.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlencode

from faust.web import Request, Response, View

from app.agents.waiters import account_waiters
from app.core.ledger import Account, Hold
from app.core.models import check_hold_id
from app.core.wire import decimal_text
from app.errors import InvalidOperation
from app.faust_app import app
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, open_holds, read
from app.topics import operations_topic
from app.web import answers, auth, parsing, waiting
from app.web.answers import counted
from app.web.asset_views import registered
from app.web.at_owner import routed
from app.web.guard import requires
from app.web.waiting import WAIT_RETRY_AFTER_S, Watch, cursor, wait_slot, watch

log = logging.getLogger(__name__)

#: Open holds an account's answer lists at most; ``holds_more`` says there are more, paged by the holds view.
ACCOUNT_HOLDS = 100
DEFAULT_HOLDS_LIMIT = 100
MAX_HOLDS_LIMIT = 1000
#: A seq, like a Kafka offset, is a signed 64-bit count.
MAX_SEQ = 2**63 - 1


def _parse_min_seq(raw: Optional[str]) -> int:
    """``?min_seq=``: a non-negative integer; 0 (or none) asks for nothing."""
    if raw is None:
        return 0
    value = 0 if raw == "0" else decimal_text(raw, MAX_SEQ)
    if value is None:
        raise InvalidOperation("min_seq", "invalid_query", f"min_seq must be an integer between 0 and {MAX_SEQ}")
    return value


def _seq_here(user_id: int) -> int:
    """The seq of the user's account in this worker's table (0 for a user never seen)."""
    key = user_key(user_id)
    return Account.from_json(read(accounts, partition_for(key, settings.partitions), key)).seq


async def _at_least(view: View, user_id: int, min_seq: int) -> Optional[Response]:
    """None once the user's account here is at ``min_seq`` or past it; else the refusal to answer with.

    Read-your-writes on any worker: a client that was answered seq N asks for
    ``?min_seq=N`` and gets a state that includes its write, or no state at
    all. The wait takes a wait slot and lasts up to ``UBS_WAIT_TIMEOUT_S``,
    woken by the checkpoint that writes the account, and only while this worker
    still owns the partition (``watch``, app.web.waiting). Not reached in time: 503
    ``seq_not_reached`` with the seq this worker has, never an older answer.
    """
    key = user_key(user_id)

    def reached() -> bool:
        return _seq_here(user_id) >= min_seq

    outcome = await watch(account_waiters, key, reached, 0, settle=True)
    if outcome is Watch.TIMEOUT:
        with wait_slot(settings.wait_timeout_s) as held:
            if not held:
                log.warning(
                    "waits_full view=account user_id=%s min_seq=%s limit=%s", user_id, min_seq, waiting.waits.limit
                )
                return answers.overloaded(
                    view, "too many requests are waiting on this worker; retry after Retry-After", WAIT_RETRY_AFTER_S
                )
            outcome = await watch(account_waiters, key, reached, settings.wait_timeout_s, settle=True)
    if outcome is Watch.UNCONFIRMED:
        return answers.not_owner_confirmed(view)
    if outcome is Watch.SETTLING:
        return answers.settling_refusal(view)
    if outcome is Watch.TIMEOUT:
        seq = _seq_here(user_id)
        return answers.retry_later(
            view,
            "seq_not_reached",
            "min_seq",
            f"the account is at seq {seq} here, not yet at {min_seq}, after {settings.wait_timeout_s:g} s; "
            "retry after Retry-After",
            WAIT_RETRY_AFTER_S,
            seq=seq,
            min_seq=min_seq,
        )
    return None


def _applied(user_id: int) -> Dict[str, Any]:
    """The user's partition and the last offset of balance.operations applied there (None before the first).

    Every operation up to that offset is in the answer; the answer may hold a
    few more, of a checkpoint under way (its cursor is written last).
    """
    partition = partition_for(user_key(user_id), settings.partitions)
    return {"partition": partition, "applied_offset": cursor(operations_topic.get_topic_name(), partition)}


@app.page("/accounts/{user_id}")
class AccountView(View):
    """Balances of one user, from the accounts table of the owning worker."""

    @counted("account")
    @requires(auth.ACCOUNTS_READ, per_user=True)
    @routed
    async def get(self, request: Request, user_id: str) -> Response:
        """200 with seq, balances per asset and the first ``ACCOUNT_HOLDS`` open holds, or 404 for a user never seen.

        ``"holds_more": true`` says the user has more open holds, which the holds
        view pages through: an account's answer is bounded like its row.
        ``?min_seq=N`` answers only once the account is at seq N or past it
        (``_at_least``); ``partition`` and ``applied_offset`` say how fresh the
        answer is (``_applied``).
        """
        try:
            min_seq = _parse_min_seq(parsing.query(request, ("min_seq",)).get("min_seq"))
        except InvalidOperation as error:
            return answers.error(self, 400, error.reason, error.field, error.message)
        refusal = await _at_least(self, int(user_id), min_seq) if min_seq > 0 else None
        if refusal is not None:
            return refusal
        stored, found = open_holds(int(user_id))
        if not stored:
            return answers.error(self, 404, "unknown_user", "user_id", "no account for this user")
        account = Account.from_json(stored)
        balances = {asset_id: _with_decimals(int(asset_id), b) for asset_id, b in account.balances_json().items()}
        first = list(islice(found, ACCOUNT_HOLDS + 1))
        body = {"user_id": int(user_id), "seq": account.seq, "balances": balances}
        body["holds"] = _holds_list(first[:ACCOUNT_HOLDS])
        if len(first) > ACCOUNT_HOLDS:
            body["holds_more"] = True
        return self.json({**body, **_applied(int(user_id))})


@app.page("/accounts/{user_id}/holds")
class HoldsView(View):
    """Open holds of one user, a page at a time, from the holds table of the owning worker."""

    @counted("holds")
    @requires(auth.ACCOUNTS_READ, per_user=True)
    @routed
    async def get(self, request: Request, user_id: str) -> Response:
        """200 with up to ``limit`` open holds after the hold id ``after``, in hold id order (none for a new user).

        ``next`` is the path and query of the next page, null on the last one. A
        page reads only its own rows, whatever the number of holds. 422 names a
        query parameter that is unknown, repeated or out of range. ``?min_seq=``
        as for the account.
        """
        try:
            query = parsing.query(request, ("limit", "after", "min_seq"))
            limit = _holds_limit(query.get("limit"))
            after = None if "after" not in query else _hold_id_after(query["after"])
            min_seq = _parse_min_seq(query.get("min_seq"))
        except InvalidOperation as error:
            return answers.error(self, 422, error.reason, error.field, error.message)
        refusal = await _at_least(self, int(user_id), min_seq) if min_seq > 0 else None
        if refusal is not None:
            return refusal
        stored, found = open_holds(int(user_id), after)
        page = list(islice(found, limit + 1))
        shown = page[:limit]
        following = None
        if len(page) > limit:
            following = f"/accounts/{int(user_id)}/holds?" + urlencode({"limit": limit, "after": shown[-1][0]})
        seq = Account.from_json(stored).seq
        body = {"user_id": int(user_id), "seq": seq, "holds": _holds_list(shown), "next": following}
        return self.json({**body, **_applied(int(user_id))})


def _holds_limit(raw: Optional[str]) -> int:
    if raw is None:
        return DEFAULT_HOLDS_LIMIT
    limit = decimal_text(raw, MAX_HOLDS_LIMIT)
    if limit is None:
        raise InvalidOperation("limit", "invalid_limit", f"limit must be an integer from 1 to {MAX_HOLDS_LIMIT}")
    return limit


def _hold_id_after(raw: str) -> str:
    try:
        return check_hold_id(raw)
    except InvalidOperation as error:
        raise InvalidOperation("after", "invalid_after", f"after must be a hold id: {error.message}") from None


def _with_decimals(asset_id: int, balance: Dict[str, int]) -> Dict[str, Any]:
    """A balance in minor units and, for a registered asset, in decimals beside them."""
    asset = registered(asset_id)
    if asset is None:
        return dict(balance)
    decimals = {f"{name}_decimal": asset.decimal(balance[name]) for name in ("available", "locked")}
    return {**balance, "code": asset.code, **decimals}


def _holds_list(holds: Iterable[Tuple[str, Hold]]) -> List[Dict[str, Any]]:
    """Open holds as the API shows them, in the order given (hold id order)."""
    return [
        {"hold_id": hold_id, "asset": hold.asset, "remaining": hold.remaining, "expires_at_ms": hold.expires_at_ms}
        for hold_id, hold in holds
    ]
