"""Waiting for what a checkpoint writes: an operation's result, here or at its owner, and how far the owner is.

A wait is woken by the checkpoint that writes the row it waits for
(app.agents.waiters), never answered from tables this worker may no longer own
(``watch``), and holds one of at most UBS_WEB_MAX_WAITERS wait slots (``waits``)
for as long as it lasts, so clients cannot hold more tasks than that however
many connections they open. A wait at another worker asks the owner to wait the
same way, and ends early with an estimate once the owner's backlog would outlast
it (app.web.admission).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import aiohttp
from faust.types import TP

from app.agents import checkpoint
from app.agents.waiters import Waiters, waiters
from app.core.ledger import Account, StoredResult, operation_key
from app.faust_app import app
from app.frame import ownership
from app.guards.input_gaps import cursor_key
from app.guards.input_watch import owned_inputs
from app.observability import metrics
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, read, results
from app.topics import operations_topic
from app.web import admission, peers, routing, tls
from app.web.at_owner import settling

log = logging.getLogger(__name__)

#: A wait for a result looks the owner up again at least this often (a rebalance may move the user).
OWNER_RECHECK_S = 1.0
#: After a failed lookup, the next one waits this long.
LOOKUP_RETRY_S = 0.1
#: How much longer than its wait a request to the owner may take.
REMOTE_GRACE_S = 5.0
#: A wait cut at the end of the ownership bound looks again this much after it, when the bound has passed.
BOUND_TICK_S = 0.01
#: Requests waiting for a result on this worker, at most UBS_WEB_MAX_WAITERS (app.web.admission).
waits = admission.Slots(settings.web_max_waiters)
metrics.HTTP_WAITING.set_function(lambda: waits.held)
#: When a request turned away for want of a wait slot may come back: a wait lasts UBS_WAIT_TIMEOUT_S at most,
#: and most end within milliseconds, when their result is written.
WAIT_RETRY_AFTER_S = 1.0


def wait_slot(wait_s: float) -> ContextManager[bool]:
    """A slot in ``waits`` for a wait of ``wait_s`` (yields whether one was free); a look without a wait needs none."""
    return waits.take() if wait_s > 0 else nullcontext(True)


class Watch(enum.Enum):
    """How a look at this worker's tables ended (``watch``)."""

    READY = "ready"
    TIMEOUT = "timeout"
    #: This worker stopped vouching for its partitions before the answer came.
    UNCONFIRMED = "unconfirmed"
    #: A rebalance began here before the answer came (``settling``).
    SETTLING = "settling"


async def watch(
    group: Waiters, key: bytes, ready: Callable[[], bool], wait_s: float, vouch: bool = True, settle: bool = False
) -> Watch:
    """Look until ``ready()``, woken by the checkpoint that writes ``key`` (app.agents.waiters), up to ``wait_s``.

    With ``vouch``, every look first asks whether this worker still owns its
    partitions (app.frame.ownership), and a wait is cut where the last word from
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
        return await local_result(user_id, op_id, wait_s, vouch=False)
    if routing.is_local(owner):
        return await local_result(user_id, op_id, wait_s, offset)
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


async def local_result(
    user_id: int, op_id: str, wait_s: float, offset: Optional[int] = None, vouch: bool = True
) -> Lookup:
    """The result in this worker's table, waiting up to ``wait_s`` for the checkpoint that writes it.

    With ``vouch``, only while this worker still owns its partitions (``watch``).
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

    outcome = await watch(waiters, key, settled, wait_s, vouch)
    if outcome is Watch.READY:
        return Lookup(found[-1])
    if outcome is Watch.UNCONFIRMED:
        return Lookup(None, owner=settings.canonical_url, unconfirmed=True)
    applied = cursor(operations_topic.get_topic_name(), partition)
    behind = None if offset is None else _records_before(partition, offset - _or_none_yet(applied))
    return Lookup(None, applied, checkpoint.inputs_checkpointed, behind, settings.canonical_url)


def _settled(partition: int, user_id: int, stored: StoredResult) -> bool:
    """Whether the user's account holds the stored result, which only then is the operation's answer.

    A checkpoint writes result rows one step before accounts; a worker killed
    between the two applies the message again on restart, and the result it
    then stores can take another seq.
    """
    return Account.from_json(read(accounts, partition, user_key(user_id))).has_applied(stored.origin)


def cursor(topic: str, partition: int) -> Optional[int]:
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
            lags.append(end - 1 - _or_none_yet(cursor(tp.topic, tp.partition)))
    return admission.records_before(ahead, lags)
