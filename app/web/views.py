"""The HTTP gateway, served by every worker on UBS_WEB_HOST:UBS_WEB_PORT, and the API key scope of each route.

    POST /operations[?wait=true]        operations:write  submit an operation (202, or 200 with its result)
    POST /operations?replay=P:O         operator          the same, replaying the dead letter at P:O
    GET  /operations/{user_id}/{op_id}  accounts:read     the stored result of one operation (404 until it exists);
                                        (or operations:write, or operator: who may submit may read the answer)
    GET  /accounts/{user_id}            accounts:read     balances from the accounts table, and the first open holds
    GET  /accounts/{user_id}/holds      accounts:read     open holds, a page at a time (?limit=N&after=HOLD_ID)
    GET  /accounts/{user_id}/events     accounts:read     history from the database, newest first (?limit=N)
    GET  /assets, /assets/{asset}       any key           the asset registry
    POST /assets                        assets:write      register an asset
    GET  /health                        none              liveness and what this worker owns
    GET  /metrics                       metrics:read      Prometheus text format (app.monitoring)

Once any key is configured (app.web.access), every route but /health answers 401
without a valid key and 403 naming the scope it lacks or the user outside its
ranges, before it reads a body, forwards or produces anything. Table reads go to
the worker that owns the user's partition, which decides again on the client's
own Authorization header; any worker answers for any user. Client mistakes get a
4xx JSON body naming the field; an unavailable dependency is a 503, never a false 202.
A body over UBS_MAX_BODY_BYTES is a 413 however it is sent; at most
UBS_WEB_MAX_WAITERS requests wait for results here at once, and one more is a
503 ``overloaded``; slow clients are disconnected (app.web.limits).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import math
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from faust.types import TP
from faust.web import Request, Response, View

from app import metrics
from app.agents import checkpoint
from app.agents.waiters import Waiters, account_waiters, waiters
from app.core.assets import Asset, parse_asset, to_minor_units
from app.core.ledger import Account, Hold, StoredResult, operation_key
from app.core.models import (
    MAX_ASSET,
    MAX_ID,
    Command,
    Event,
    Trade,
    check_hold_id,
    check_op_id,
    parse_operation,
    users_named,
)
from app.core.wire import decimal_text, decode_json
from app.errors import InvalidOperation, SettlementUnavailable
from app.faust_app import app
from app.guards import failpoints, ownership
from app.guards.input_gaps import cursor_key
from app.guards.input_watch import owned_inputs
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.sink.service import sink_partitions, store
from app.tables import accounts, assets, cursors, open_holds, read, results
from app.topics import ASSETS, operations_topic
from app.web import admission, auth, peers, routing, tls
from app.web.guard import Handler, audited, decided, note, refused, requires

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
#: Open holds an account's answer lists at most; ``holds_more`` says there are more, paged by the holds view.
ACCOUNT_HOLDS = 100
DEFAULT_HOLDS_LIMIT = 100
MAX_HOLDS_LIMIT = 1000
MAX_OFFSET = 2**63 - 1  # Kafka offsets are signed 64-bit
PRODUCE_TIMEOUT_S = 10.0
#: A wait for a result looks the owner up again at least this often (a rebalance may move the user).
OWNER_RECHECK_S = 1.0
#: After a failed lookup, the next one waits this long.
LOOKUP_RETRY_S = 0.1
#: How much longer than its wait a request to the owner may take.
REMOTE_GRACE_S = 5.0
#: A read the owner refused as ``not_owner_confirmed`` looks the owner up again for this long (it may have moved).
REROUTE_S = 2.0
#: ... this often.
REROUTE_RETRY_S = 0.25
#: When a refused read may come back: the owner answers again once its coordinator does, or the group moves
#: its partitions (a session timeout after its last heartbeat) and another worker answers.
UNCONFIRMED_RETRY_AFTER_S = 1.0
#: A read that finds this worker rebalancing waits this long for its tables to settle, looking this often.
SETTLE_WAIT_S = 2.0
SETTLE_POLL_S = 0.05
#: When a read refused during a rebalance may come back: most rebalances settle within a second or two.
SETTLING_RETRY_AFTER_S = 1.0
#: A wait cut at the end of the ownership bound looks again this much after it, when the bound has passed.
BOUND_TICK_S = 0.01
#: A seq, like a Kafka offset, is a signed 64-bit count.
MAX_SEQ = 2**63 - 1
#: A dead letter's place, PARTITION:OFFSET, as ``ubscore dlq`` names it.
_POSITION = re.compile(r"\d{1,10}:\d{1,19}")
#: Requests waiting for a result on this worker, at most UBS_WEB_MAX_WAITERS (app.web.admission).
waits = admission.Slots(settings.web_max_waiters)
metrics.HTTP_WAITING.set_function(lambda: waits.held)
#: When a request turned away for want of a wait slot may come back: a wait lasts UBS_WAIT_TIMEOUT_S at most,
#: and most end within milliseconds, when their result is written.
WAIT_RETRY_AFTER_S = 1.0


def _error(view: View, status: int, reason: str, field: Optional[str], message: str, **extra: Any) -> Response:
    return view.json({"error": reason, "field": field, "message": message, **extra}, status=status)


def _retry_later(
    view: View, reason: str, field: Optional[str], message: str, retry_after_s: float, **extra: Any
) -> Response:
    """A 503 that may succeed later, not now; ``Retry-After`` says when, in whole seconds."""
    body = {"error": reason, "field": field, "message": message, **extra}
    return view.json(body, status=503, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def _overloaded(view: View, message: str, retry_after_s: float, **extra: Any) -> Response:
    """503 ``overloaded``: too many requests wait or too much work is ahead, for now."""
    return _retry_later(view, "overloaded", None, message, retry_after_s, **extra)


def _not_owner_confirmed(view: View, message: Optional[str] = None, **extra: Any) -> Response:
    """503 ``not_owner_confirmed``: this worker cannot show it still owns the partition (app.guards.ownership).

    Its tables may be behind a new owner's, so it answers nothing from them;
    the client (and a forwarding worker) asks again, here or elsewhere.
    """
    tracker = ownership.tracker
    silence_s = tracker.silence_s()
    return _retry_later(
        view,
        "not_owner_confirmed",
        None,
        message
        or "this worker has not heard from its Kafka group coordinator within the ownership bound, so its tables "
        "may be behind the partition's new owner; retry after Retry-After, on any worker",
        UNCONFIRMED_RETRY_AFTER_S,
        coordinator_silence_s=None if silence_s is None else round(silence_s, 1),
        ownership_bound_s=tracker.bound_s,
        **extra,
    )


def settling() -> bool:
    """Whether this worker's tables may be behind its assignment: a rebalance is under way here.

    Faust marks a rebalance from the moment the group revokes partitions until
    its recovery has read every newly assigned changelog to the end. In
    between, a partition coming (back) here holds only what this worker last
    wrote, not what the previous owner applied since, and a partition going
    away may already be closed: its rows read as absent. No read is answered
    from the tables meanwhile.
    """
    return bool(app.rebalancing)


def _settling_refusal(view: View) -> Response:
    """503 ``not_ready``: this worker is taking over partitions and reading their changelogs (``settling``)."""
    return _retry_later(
        view,
        "not_ready",
        None,
        "this worker is rebalancing: its tables are being brought up to date from the changelogs; "
        "retry after Retry-After",
        SETTLING_RETRY_AFTER_S,
    )


def _wait_slot(wait_s: float) -> ContextManager[bool]:
    """A slot in ``waits`` for a wait of ``wait_s`` (yields whether one was free); a look without a wait needs none."""
    return waits.take() if wait_s > 0 else nullcontext(True)


def _parse_user_id(raw: str) -> int:
    value = decimal_text(raw, MAX_ID)
    if value is None:
        raise InvalidOperation("user_id", "invalid_user_id", f"user_id must be an integer between 1 and {MAX_ID}")
    return value


def _parse_offset(raw: str) -> int:
    value = 0 if raw == "0" else decimal_text(raw, MAX_OFFSET)
    if value is None:
        raise InvalidOperation("offset", "invalid_query", f"offset must be an integer between 0 and {MAX_OFFSET}")
    return value


def _query(request: Request, allowed: Tuple[str, ...]) -> Dict[str, str]:
    """The query parameters, refusing unknown and repeated names as the body refuses unknown fields."""
    names = [name for name, _ in request.query.items()]  # keys() folds repeated names
    for name in names:
        if name not in allowed:
            raise InvalidOperation(name[:64], "invalid_query", f"query parameter must be one of {', '.join(allowed)}")
        if names.count(name) > 1:
            raise InvalidOperation(name, "invalid_query", f"query parameter {name} is given more than once")
    return dict(request.query.items())


def counted(name: str) -> Callable[[Handler], Handler]:
    """Count and time answers per view and status; answer a body aiohttp refused; turn a stray exception into a 500.

    Every read of a body, the views' and a forward's, raises here when aiohttp
    refuses it (``_unreadable``), so no client's body can end in a 500.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(view, request, *args, **kwargs)
            except Exception as exc:
                refusal = _unreadable(view, request, exc)
                if refusal is None:
                    log.exception("http_error view=%s path=%s", name, request.path)  # type: ignore[attr-defined]
                response = refusal or _error(
                    view, 500, "internal_error", None, "unexpected server error; see the worker log"
                )
            status = str(response.status)
            metrics.HTTP_REQUESTS.labels(view=name, status=status).inc()
            metrics.HTTP_SECONDS.labels(view=name, status=status).observe(time.perf_counter() - started)
            return response

        return wrapper

    return decorate


def _unreadable(view: View, request: Request, exc: Exception) -> Optional[Response]:
    """The answer to a body aiohttp would not hand over; None for any other error.

    Over ``client_max_size`` (UBS_MAX_BODY_BYTES), with or without a
    Content-Length, aiohttp stops reading and raises: 413. A chunked or compressed
    body it cannot decode: 400. A client gone before its body came, on its own or
    disconnected by app.web.limits: 499 (nginx's "client closed request"), which
    only the metrics see.
    """
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = settings.max_body_bytes
        return _error(view, 413, "body_too_large", None, f"body is limited to {limit} bytes", limit_bytes=limit)
    if isinstance(exc, web.RequestPayloadError):
        return _error(view, 400, "invalid_body", None, f"the body cannot be read: {exc}")
    if isinstance(exc, OSError) and request.transport is None:  # type: ignore[attr-defined]  # Faust's type omits it
        return _error(view, 499, "client_closed_request", None, "the connection closed before the body came")
    return None


def routed(handler: Handler) -> Handler:
    """Answer on the worker that owns the user's partition, forwarding the request (its headers too) if needed.

    Here, only while this worker can show it still owns its partitions
    (app.guards.ownership) and is not rebalancing (``settling``): every
    partition read passes these checks. A rebalance is waited out for up to
    ``SETTLE_WAIT_S``, after which the owner is looked up again. An owner
    elsewhere that refuses as ``not_owner_confirmed`` is looked up again for
    ``REROUTE_S``, since the group may have moved the partition meanwhile; then
    its refusal is the answer.
    """

    @functools.wraps(handler)
    async def wrapper(view: View, request: Request, user_id: str, *args: Any, **kwargs: Any) -> Response:
        try:
            _parse_user_id(user_id)
            if "op_id" in kwargs:
                check_op_id(kwargs["op_id"])
        except InvalidOperation as error:
            return _error(view, 400, error.reason, error.field, error.message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REROUTE_S
        settled_by = loop.time() + SETTLE_WAIT_S
        while True:
            owner = routing.owner_of(int(user_id))
            if owner is None:  # starting, or a rebalance without a verdict yet
                return _error(view, 503, "not_ready", None, "partition assignment is not known yet; retry shortly")
            if routing.is_local(owner):
                if not ownership.tracker.vouches():
                    return _not_owner_confirmed(view)
                if settling():
                    if loop.time() >= settled_by:
                        return _settling_refusal(view)
                    await asyncio.sleep(SETTLE_POLL_S)
                    continue
                return await handler(view, request, user_id, *args, **kwargs)
            response = await routing.forward(view, request, owner)
            if not routing.refused_as_unconfirmed(response) or loop.time() + REROUTE_RETRY_S > deadline:
                return response
            await asyncio.sleep(REROUTE_RETRY_S)

    return wrapper


class Watch(enum.Enum):
    """How a look at this worker's tables ended (``_watch``)."""

    READY = "ready"
    TIMEOUT = "timeout"
    #: This worker stopped vouching for its partitions before the answer came.
    UNCONFIRMED = "unconfirmed"
    #: A rebalance began here before the answer came (``settling``).
    SETTLING = "settling"


async def _watch(
    group: Waiters, key: bytes, ready: Callable[[], bool], wait_s: float, vouch: bool = True, settle: bool = False
) -> Watch:
    """Look until ``ready()``, woken by the checkpoint that writes ``key`` (app.agents.waiters), up to ``wait_s``.

    With ``vouch``, every look first asks whether this worker still owns its
    partitions (app.guards.ownership), and a wait is cut where the last word from
    the coordinator stops vouching: no wait ends in an answer from tables the
    group may have handed to another worker. With ``settle``, a look during a
    rebalance (``settling``) ends the wait too: for a caller that answers from
    the tables right after it, where a result lookup only ever finds facts.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        with group.watching(key) as written:
            if vouch and not ownership.tracker.vouches():
                return Watch.UNCONFIRMED
            if settle and settling():
                return Watch.SETTLING
            if ready():
                return Watch.READY
            left = deadline - loop.time()
            if left <= 0:
                return Watch.TIMEOUT
            if vouch:
                left = min(left, ownership.tracker.vouched_for_s() + BOUND_TICK_S)
            try:
                await asyncio.wait_for(written.wait(), left)
            except asyncio.TimeoutError:
                pass


@dataclass(frozen=True)
class Lookup:
    """What the owner said: the result if there is one, else how far it is from the operation.

    ``applied`` is the operation's partition cursor; ``applied_total`` the inputs the
    owner has checkpointed since it started, which gives its rate; ``behind`` the
    records it applies before the operation (admission.records_before), known
    when the operation's offset was given.
    """

    result: Optional[Dict[str, Any]]
    applied: Optional[int] = None
    applied_total: Optional[int] = None
    behind: Optional[int] = None
    owner: Optional[str] = None
    #: The owner had no wait slot free (503 ``overloaded``): asked again at once, it would refuse again.
    turned_away: bool = False
    #: The owner could not show it still owns the partition (503 ``not_owner_confirmed``).
    unconfirmed: bool = False


@dataclass(frozen=True)
class Waited:
    """The outcome of a wait: the result, how long the backlog ahead of the operation will take, or a refusal."""

    result: Optional[Dict[str, Any]]
    backlog_s: Optional[float] = None
    #: The owner had no wait slot free for it (UBS_WEB_MAX_WAITERS there).
    turned_away: bool = False
    #: The owner, at the wait's end, could not show it still owns the partition.
    unconfirmed: bool = False


async def wait_result(
    user_id: int, op_id: str, timeout_s: float, offset: Optional[int] = None, authorization: Optional[str] = None
) -> Waited:
    """The result of an operation, waiting up to ``timeout_s`` for it at the worker that owns the user.

    Here, the request is woken by the checkpoint that writes the result
    (app.agents.waiters); elsewhere, it asks the owner to wait the same way
    (``GET /operations/{user_id}/{op_id}?wait_s=``). Each wait is cut into slices
    of at most ``OWNER_RECHECK_S``, after which the owner is looked up again: a
    rebalance may have moved the user meanwhile.

    With the operation's ``offset`` on its partition, the owner is asked at once
    and again after ``admission.PROBE_S`` how much it applied and how many records
    it has before the operation; once those would take longer than the time left
    at the rate seen, the wait ends with that estimate (``backlog_s``) instead of
    running into the timeout.

    ``authorization`` is the client's own header, sent to the owner, which
    decides on it as on any read: no worker vouches for another.

    An owner that cannot show it still owns the partition (``not_owner_confirmed``)
    ends the wait at once when it is this worker; another is asked again after
    ``LOOKUP_RETRY_S`` (the group may move the partition meanwhile), and if it
    still refuses when the wait ends, that is the outcome.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    first: Optional[Tuple[float, Optional[str], int]] = None  # when the owner first gave its count, who, and it
    slices = iter((0.0, admission.PROBE_S))  # a first look at once, a second soon, then every OWNER_RECHECK_S
    while True:
        slice_s = max(0.0, min(deadline - loop.time(), next(slices, OWNER_RECHECK_S)))
        try:
            lookup = await _result_at_owner(user_id, op_id, slice_s, offset, authorization)
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            log.warning("result_lookup_failed user_id=%s op_id=%s error=%r", user_id, op_id, tls.describe(exc))
            lookup = Lookup(None)
            await asyncio.sleep(min(LOOKUP_RETRY_S, max(0.0, deadline - loop.time())))
        now = loop.time()
        if lookup.unconfirmed and (now >= deadline or lookup.owner == settings.canonical_url):
            return Waited(None, unconfirmed=True)
        if lookup.result is not None or now >= deadline:
            return Waited(lookup.result)
        if lookup.turned_away:
            return Waited(None, turned_away=True)
        if lookup.unconfirmed:
            await asyncio.sleep(min(LOOKUP_RETRY_S, max(0.0, deadline - now)))
            continue
        if lookup.applied_total is None or lookup.behind is None:
            continue
        if first is None or first[1] != lookup.owner or first[2] > lookup.applied_total:
            first = (now, lookup.owner, lookup.applied_total)  # a new owner counts from its own start
            continue
        done = lookup.applied_total - first[2]
        backlog_s = admission.backlog_s(lookup.behind, done, now - first[0])
        if backlog_s is not None and backlog_s > deadline - now:
            return Waited(None, backlog_s)


async def _result_at_owner(
    user_id: int, op_id: str, wait_s: float, offset: Optional[int] = None, authorization: Optional[str] = None
) -> Lookup:
    owner = routing.owner_of(user_id)
    if owner is None:
        # No assignment names an owner yet: this worker's table may hold the result, but its
        # counts would describe partitions it does not own, so no estimate comes from them.
        # A stored result never changes, so one found here is true whoever owns it now.
        return await _local_result(user_id, op_id, wait_s, vouch=False)
    if routing.is_local(owner):
        return await _local_result(user_id, op_id, wait_s, offset)
    query = {"wait_s": f"{wait_s:.3f}", **({} if offset is None else {"offset": str(offset)})}
    url = peers.at_owner(owner, owner.with_path(f"/operations/{user_id}/{op_id}").with_query(query))
    headers = {} if authorization is None else {"Authorization": authorization}
    async with peers.session().get(url, timeout=peers.timeout(wait_s + REMOTE_GRACE_S), headers=headers) as response:
        body: Dict[str, Any] = await response.json(content_type=None)
        if response.status == 200:
            return Lookup(body)
        if not isinstance(body, dict):
            return Lookup(None)
        if response.status == 503 and body.get("error") == "overloaded":
            return Lookup(None, owner=str(owner), turned_away=True)
        if response.status == 503 and body.get("error") == "not_owner_confirmed":
            return Lookup(None, owner=str(owner), unconfirmed=True)
        counts = [body.get(name) for name in ("applied_offset", "applied_total", "behind")]
        applied, applied_total, behind = [count if isinstance(count, int) else None for count in counts]
        return Lookup(None, applied, applied_total, behind, str(owner))


async def _local_result(
    user_id: int, op_id: str, wait_s: float, offset: Optional[int] = None, vouch: bool = True
) -> Lookup:
    """The result in this worker's table, waiting up to ``wait_s`` for the checkpoint that writes it.

    With ``vouch``, only while this worker still owns its partitions (``_watch``).
    """
    key = operation_key(user_id, op_id).encode()
    partition = partition_for(user_key(user_id), settings.partitions)
    found: List[Dict[str, Any]] = []

    def settled() -> bool:
        # No row yet, or a trade's pending row (its result comes with the buyer's settle leg): not yet.
        stored = StoredResult.from_json(read(results, partition, key))
        if stored is not None and stored.event is not None and _settled(partition, user_id, stored):
            found.append(stored.event.to_json())
            return True
        return False

    outcome = await _watch(waiters, key, settled, wait_s, vouch)
    if outcome is Watch.READY:
        return Lookup(found[-1])
    if outcome is Watch.UNCONFIRMED:
        return Lookup(None, owner=settings.canonical_url, unconfirmed=True)
    applied = _cursor(operations_topic.get_topic_name(), partition)
    behind = None if offset is None else _records_before(partition, offset - _or_none_yet(applied))
    return Lookup(None, applied, checkpoint.inputs_checkpointed, behind, settings.canonical_url)


def _settled(partition: int, user_id: int, stored: StoredResult) -> bool:
    """Whether the user's account holds the stored result, which only then is the operation's answer.

    A checkpoint writes result rows one step before accounts; a worker killed
    between the two applies the message again on restart, and the result it
    then stores can take another seq.
    """
    return Account.from_json(read(accounts, partition, user_key(user_id))).has_applied(stored.origin)


def _cursor(topic: str, partition: int) -> Optional[int]:
    """The offset of the last input this worker applied on the partition, if it applied any."""
    applied = read(cursors, partition, cursor_key(topic, partition))
    return applied if isinstance(applied, int) else None


def _or_none_yet(applied: Optional[int]) -> int:
    """A partition with nothing applied yet has all its records ahead (counted from offset 0)."""
    return -1 if applied is None else applied


def _records_before(partition: int, ahead: int) -> int:
    """What this worker applies before the record ``ahead`` past its cursor on its operations partition."""
    lags = []
    own = TP(operations_topic.get_topic_name(), partition)
    for tp in owned_inputs():
        if tp == own:
            continue
        end = app.consumer.highwater(tp)  # from the last fetch; None before the first
        if end is not None:
            lags.append(end - 1 - _or_none_yet(_cursor(tp.topic, tp.partition)))
    return admission.records_before(ahead, lags)


def _same_request(stored: Event, operation: Command) -> bool:
    """Whether a stored result answers this request; an unlock of a whole hold named no amount."""
    if isinstance(operation, Trade):
        return stored.trade == operation
    kind = "transfer_out" if operation.kind == "transfer" else operation.kind
    counterparty = operation.to_user_id if operation.kind == "transfer" else None
    amount = stored.amount if operation.amount is None else operation.amount
    return (stored.kind, stored.asset, stored.amount, stored.counterparty, stored.hold_id) == (
        kind,
        operation.asset,
        amount,
        counterparty,
        operation.hold_id,
    )


async def _read_body(request: Request) -> bytes:
    """The body: aiohttp stops reading past UBS_MAX_BODY_BYTES (its ``client_max_size``), and ``counted`` answers."""
    return await request.read()  # type: ignore[attr-defined]  # faust.web.Request omits it


def _submit_query(request: Request) -> Tuple[bool, Optional[str]]:
    """A submit's ``?wait`` and ``?replay`` (a dead letter's place), or InvalidOperation naming the bad one."""
    query = _query(request, ("wait", "replay"))
    wait, replay = query.get("wait", "false").lower(), query.get("replay")
    if wait not in ("true", "false", "1", "0"):
        raise InvalidOperation("wait", "invalid_query", "wait must be true or false")
    if replay is not None and not _POSITION.fullmatch(replay):
        raise InvalidOperation("replay", "invalid_query", "replay must be PARTITION:OFFSET of a dead letter")
    return wait in ("true", "1"), replay


@app.page("/operations")
class OperationsView(View):
    """Submit operations: validated here, produced to balance.operations keyed by user."""

    @audited("POST", "/operations")
    @counted("submit")
    @requires()  # a valid key; its scope, operations:write or operator, depends on ?replay (below)
    async def post(self, request: Request) -> Response:
        """202 once Kafka has the operation; with ?wait=true, 200 and its result event.

        ``?replay=PARTITION:OFFSET`` marks the replay of a dead letter (``ubscore
        dlq replay``), an operator's action, audited with the letter's place.
        Every user the operation names must be in the key's ranges.
        """
        try:
            wait, replay = _submit_query(request)
        except InvalidOperation as error:
            return _error(self, 400, error.reason, error.field, error.message)
        note(replay=replay)
        scope = (auth.OPERATOR,) if replay is not None else (auth.OPERATIONS_WRITE,)
        verdict = decided(request, scope)
        if not verdict.allowed:
            return refused(self, verdict)
        raw = await _read_body(request)
        try:
            operation = parse_operation(to_minor_units(decode_json(raw), registered))
        except InvalidOperation as error:
            status = 400 if error.field is None else 422
            return _error(self, status, error.reason, error.field, error.message)
        note(op_id=operation.op_id)
        verdict = decided(request, scope, users_named(operation))
        if not verdict.allowed:
            return refused(self, verdict)
        # A wait holds its slot from before the operation is produced: one turned away has submitted nothing.
        with _wait_slot(settings.wait_timeout_s if wait else 0) as held:
            if not held:
                log.warning(
                    "waits_full view=submit user_id=%s op_id=%s limit=%s",
                    operation.user_id,
                    operation.op_id,
                    waits.limit,
                )
                return _overloaded(
                    self,
                    "too many requests are waiting for results on this worker; nothing was submitted: "
                    "retry with the same op_id after Retry-After",
                    WAIT_RETRY_AFTER_S,
                    op_id=operation.op_id,
                )
            return await self._submit(operation, wait, request.headers.get("Authorization"))

    async def _submit(self, operation: Command, wait: bool, authorization: Optional[str]) -> Response:
        """Produce the operation: 202 once Kafka has it, or with ``wait`` its result (``_wait_for_result``)."""
        payload = json.dumps(operation.to_json(), separators=(",", ":")).encode()
        try:
            # The plain producer, never topic.send: under exactly_once that would write the
            # operation inside the worker's open transaction, invisible to the (read_committed)
            # agent until a commit that only processed input triggers, so it would never come.
            delivery = await app.producer.send(
                operations_topic.get_topic_name(), user_key(operation.user_id), payload, None, None, None
            )
            metadata = await asyncio.wait_for(asyncio.shield(delivery), timeout=PRODUCE_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
            log.warning("submit_failed user_id=%s op_id=%s error=%r", operation.user_id, operation.op_id, exc)
            return _error(
                self,
                503,
                "kafka_unavailable",
                None,
                "the operation was not confirmed by Kafka; retry with the same op_id (it is applied at most once)",
                op_id=operation.op_id,
            )
        failpoints.hit("after_produce")
        log.info(
            "submitted user_id=%s op_id=%s kind=%s partition=%s offset=%s",
            operation.user_id,
            operation.op_id,
            operation.kind,
            metadata.partition,
            metadata.offset,
        )
        if not wait:
            return self.json({"op_id": operation.op_id, "status": "submitted"}, status=202)
        # The operation's place on its partition: the wait measures how fast the owner approaches it.
        offset = (
            metadata.offset
            if metadata.partition == partition_for(user_key(operation.user_id), settings.partitions)
            else None
        )
        return await self._wait_for_result(operation, offset, authorization)

    async def _wait_for_result(
        self, operation: Command, offset: Optional[int], authorization: Optional[str]
    ) -> Response:
        waited = await wait_result(operation.user_id, operation.op_id, settings.wait_timeout_s, offset, authorization)
        found = waited.result
        if found is None and waited.backlog_s is not None:
            log.warning(
                "wait_refused user_id=%s op_id=%s backlog_s=%.1f", operation.user_id, operation.op_id, waited.backlog_s
            )
            return _overloaded(
                self,
                "the operation is in Kafka and will be applied, but not within the wait; "
                "poll GET /operations/{user_id}/{op_id} after Retry-After, or retry with the same op_id",
                waited.backlog_s,
                op_id=operation.op_id,
                backlog_s=round(waited.backlog_s, 1),
            )
        if found is None and waited.unconfirmed:
            return _not_owner_confirmed(
                self,
                "the operation is in Kafka and will be applied, but the worker holding the user's partition cannot "
                "show it still owns it; poll GET /operations/{user_id}/{op_id} after Retry-After, on any worker, or "
                "retry with the same op_id",
                op_id=operation.op_id,
            )
        if found is None and waited.turned_away:
            return _overloaded(
                self,
                "the operation is in Kafka and will be applied, but the worker that owns the user has too many "
                "requests waiting; poll GET /operations/{user_id}/{op_id} after Retry-After, or retry with the same "
                "op_id",
                WAIT_RETRY_AFTER_S,
                op_id=operation.op_id,
            )
        if found is None:
            return _error(
                self,
                504,
                "result_timeout",
                None,
                "the operation is in Kafka but has no result yet; it may still be applied. "
                "Poll GET /operations/{user_id}/{op_id} or retry with the same op_id",
                op_id=operation.op_id,
            )
        if not _same_request(Event.from_json(found), operation):
            return _error(
                self,
                409,
                "op_id_reused",
                "op_id",
                "this op_id already has a result for a different operation",
                result=found,
            )
        return self.json(found, status=200)


@app.page("/operations/{user_id}/{op_id}")
class OperationResultView(View):
    """The result event of one operation, from the results table of the owning worker."""

    @counted("result")
    @requires(auth.ACCOUNTS_READ, auth.OPERATIONS_WRITE, auth.OPERATOR, per_user=True)
    @routed
    async def get(self, request: Request, user_id: str, op_id: str) -> Response:
        """200 with the event, or 404 while (or if) it has none; ``?wait_s=`` waits that long for it first."""
        try:
            query = _query(request, ("wait_s", "offset"))
            wait_s = float(query.get("wait_s", "0"))
            offset = _parse_offset(query["offset"]) if "offset" in query else None
        except InvalidOperation as error:
            return _error(self, 400, error.reason, error.field, error.message)
        except ValueError:
            return _error(self, 400, "invalid_query", "wait_s", "wait_s must be a number of seconds")
        if not (math.isfinite(wait_s) and 0 <= wait_s <= settings.wait_timeout_s):
            return _error(
                self, 400, "invalid_query", "wait_s", f"wait_s must be between 0 and {settings.wait_timeout_s}"
            )
        with _wait_slot(wait_s) as held:
            if not held:
                log.warning("waits_full view=result user_id=%s op_id=%s limit=%s", user_id, op_id, waits.limit)
                return _overloaded(
                    self,
                    "too many requests are waiting for results on this worker; retry after Retry-After",
                    WAIT_RETRY_AFTER_S,
                )
            lookup = await _local_result(int(user_id), op_id, wait_s, offset)
        if lookup.unconfirmed:
            return _not_owner_confirmed(self)
        if lookup.result is None:
            # How far this worker is from the operation, for a gateway measuring its wait.
            return _error(
                self,
                404,
                "unknown_operation",
                "op_id",
                "no result for this op_id (yet)",
                applied_offset=lookup.applied,
                applied_total=lookup.applied_total,
                behind=lookup.behind,
            )
        return self.json(lookup.result)


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
    still owns the partition (``_watch``). Not reached in time: 503
    ``seq_not_reached`` with the seq this worker has, never an older answer.
    """
    key = user_key(user_id)

    def reached() -> bool:
        return _seq_here(user_id) >= min_seq

    outcome = await _watch(account_waiters, key, reached, 0, settle=True)
    if outcome is Watch.TIMEOUT:
        with _wait_slot(settings.wait_timeout_s) as held:
            if not held:
                log.warning("waits_full view=account user_id=%s min_seq=%s limit=%s", user_id, min_seq, waits.limit)
                return _overloaded(
                    view, "too many requests are waiting on this worker; retry after Retry-After", WAIT_RETRY_AFTER_S
                )
            outcome = await _watch(account_waiters, key, reached, settings.wait_timeout_s, settle=True)
    if outcome is Watch.UNCONFIRMED:
        return _not_owner_confirmed(view)
    if outcome is Watch.SETTLING:
        return _settling_refusal(view)
    if outcome is Watch.TIMEOUT:
        seq = _seq_here(user_id)
        return _retry_later(
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
    return {"partition": partition, "applied_offset": _cursor(operations_topic.get_topic_name(), partition)}


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
            min_seq = _parse_min_seq(_query(request, ("min_seq",)).get("min_seq"))
        except InvalidOperation as error:
            return _error(self, 400, error.reason, error.field, error.message)
        refusal = await _at_least(self, int(user_id), min_seq) if min_seq > 0 else None
        if refusal is not None:
            return refusal
        stored, found = open_holds(int(user_id))
        if not stored:
            return _error(self, 404, "unknown_user", "user_id", "no account for this user")
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
            query = _query(request, ("limit", "after", "min_seq"))
            limit = _holds_limit(query.get("limit"))
            after = None if "after" not in query else _hold_id_after(query["after"])
            min_seq = _parse_min_seq(query.get("min_seq"))
        except InvalidOperation as error:
            return _error(self, 422, error.reason, error.field, error.message)
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


@app.page("/accounts/{user_id}/events")
class HistoryView(View):
    """A user's settled history, from the database (any worker can ask it)."""

    @counted("history")
    @requires(auth.ACCOUNTS_READ, per_user=True)
    async def get(self, request: Request, user_id: str) -> Response:
        """The newest ``limit`` events, newest first."""
        try:
            uid = _parse_user_id(user_id)
            raw_limit = _query(request, ("limit",)).get("limit", str(DEFAULT_HISTORY_LIMIT))
        except InvalidOperation as error:
            return _error(self, 400, error.reason, error.field, error.message)
        limit = decimal_text(raw_limit, MAX_HISTORY_LIMIT)
        if limit is None:
            return _error(
                self, 400, "invalid_limit", "limit", f"limit must be an integer from 1 to {MAX_HISTORY_LIMIT}"
            )
        try:
            events = await store.events(uid, limit)
        except (SettlementUnavailable, OSError, asyncio.TimeoutError) as exc:
            return _error(self, 503, "database_unavailable", None, f"the settlement database is unavailable: {exc}")
        except Exception as exc:  # noqa: BLE001 - the driver's own errors (timeouts, unavailable) share no base
            log.warning("history_failed user_id=%s error=%r", uid, exc)
            return _error(self, 503, "database_unavailable", None, "the settlement database did not answer")
        return self.json({"user_id": uid, "events": events})


def registered(asset_id: int) -> Optional[Asset]:
    """A registered asset, from this worker's copy of the registry (every worker holds all of it)."""
    value = assets.get(str(asset_id).encode())
    return None if value is None else Asset(**value)


def _registry() -> List[Asset]:
    return sorted((Asset(**value) for value in assets.values()), key=lambda asset: asset.asset)


#: Registrations at the registrar, one at a time: each sees the one before it in the registry.
_registering = asyncio.Lock()

REGISTRATION_TIMEOUT_S = 10.0


@app.page("/assets")
class AssetsView(View):
    """The asset registry: list it on any worker; register at the registrar (the owner of partition 0)."""

    @counted("assets")
    @requires()
    async def get(self, request: Request) -> Response:
        """Every registered asset, by id."""
        return self.json({"assets": [asset.to_json() for asset in _registry()]})

    @audited("POST", "/assets")
    @counted("register_asset")
    @requires(auth.ASSETS_WRITE)
    async def post(self, request: Request) -> Response:
        """201 when new, 200 when registered identically before, 409 when registered otherwise."""
        raw = await _read_body(request)
        try:
            asset = parse_asset(decode_json(raw))
        except InvalidOperation as error:
            return _error(self, 400 if error.field is None else 422, error.reason, error.field, error.message)
        note(asset=asset.asset)
        registrar = routing.owner_of_partition(0)
        if registrar is None:
            return _error(self, 503, "not_ready", None, "partition assignment is not known yet; retry shortly")
        if not routing.is_local(registrar):
            return await routing.forward(self, request, registrar)
        async with _registering:
            return await self._register(asset)

    async def _register(self, asset: Asset) -> Response:
        existing = registered(asset.asset)
        if existing is None:
            payload = json.dumps(asset.to_json(), separators=(",", ":")).encode()
            try:
                delivery = await app.producer.send(ASSETS, str(asset.asset).encode(), payload, 0, None, None)
                await asyncio.wait_for(asyncio.shield(delivery), timeout=PRODUCE_TIMEOUT_S)
            except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
                log.warning("asset_register_failed asset=%s error=%r", asset.asset, exc)
                return _error(self, 503, "kafka_unavailable", None, "the registration was not confirmed; retry it")
            landed = await _read_back(asset.asset)
            if landed is None:
                return _error(self, 504, "registration_timeout", None, "in Kafka, not yet read back; retry it")
            if landed == asset:
                log.info("asset_registered asset=%s code=%s scale=%s", asset.asset, asset.code, asset.scale)
                return self.json(asset.to_json(), status=201)
            existing = landed
        if existing == asset:
            return self.json(asset.to_json(), status=200)
        message = f"asset {asset.asset} is registered as {existing.code} with scale {existing.scale}"
        return _error(self, 409, "asset_exists", "asset", message, registered=existing.to_json())


async def _read_back(asset_id: int) -> Optional[Asset]:
    """The registration as this worker's copy of the registry topic shows it, once it arrives."""
    deadline = asyncio.get_running_loop().time() + REGISTRATION_TIMEOUT_S
    # Faust's table reader applies the record and signals nothing: a registration, rare, can poll.
    while registered(asset_id) is None and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return registered(asset_id)


@app.page("/assets/{asset_id}")
class AssetView(View):
    """One registered asset."""

    @counted("asset")
    @requires()
    async def get(self, request: Request, asset_id: str) -> Response:
        """200 with the asset, 404 when it is not registered."""
        value = decimal_text(asset_id, MAX_ASSET)
        if value is None:
            return _error(self, 400, "invalid_asset", "asset", f"asset must be an integer between 1 and {MAX_ASSET}")
        asset = registered(value)
        if asset is None:
            return _error(self, 404, "unknown_asset", "asset", "no asset is registered with this id")
        return self.json(asset.to_json())


@app.page("/health")
class HealthView(View):
    """Readiness plus what this worker owns; 503 while starting, rebuilding its tables, or cut off from its group.

    ``partitioned``: the worker had an assignment and its group coordinator has
    not answered it within ``UBS_OWNERSHIP_BOUND_S`` (app.guards.ownership); its
    reads are refused until it does. It comes before ``recovering``: a worker
    cut off from Kafka recovers nothing either. ``recovering`` covers a whole
    rebalance (``settling``), not only the changelog reading: reads wait it out.
    """

    @counted("health")
    async def get(self, request: Request) -> Response:
        """Status of this worker."""
        try:
            assignment = app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet
            assignment = set()
        partitions = sorted(tp.partition for tp in assignment if tp.topic == operations_topic.get_topic_name())
        running = getattr(app.consumer, "state", "running") == "running"
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]  # TableManagerT omits it
        recovering = bool(getattr(app, "in_recovery", False)) or not recovered or settling()
        partitioned = ownership.tracker.partitioned()
        status = "starting" if not running else "partitioned" if partitioned else "recovering" if recovering else "ok"
        silence_s = ownership.tracker.silence_s()
        body = {
            "status": status,
            "worker": settings.canonical_url,
            "partitions": partitions,
            "rebalancing": bool(app.rebalancing),
            # None: this worker runs no sink; [] one that has not joined its group yet (or is rebalancing).
            "sink_partitions": sink_partitions() if settings.role == "all" else None,
            "database": "connected" if store.connected else "disconnected",
            "sink_paused": bool(metrics.value("ubscore_sink_paused")),
            "processing_guarantee": settings.processing_guarantee,
            # Since the group coordinator last answered; None before the first assignment.
            "coordinator_silence_s": None if silence_s is None else round(silence_s, 1),
            "ownership_bound_s": ownership.tracker.bound_s,
        }
        return self.json(body, status=200 if status == "ok" else 503)
