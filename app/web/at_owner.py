"""Reads of a user's partition are answered at the worker that owns it, and there only while its tables are right.

The owner is the one worker whose tables hold the partition's latest state;
any other worker forwards the read to it (``routed``). The owner answers only
while it can show it still owns its partitions (app.frame.ownership) and is not
rebalancing (``settling``): otherwise its tables may be behind a new owner's or
the changelogs, and the read is refused with a 503 the client retries.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from faust.web import Request, Response, View

from app.core.models import check_op_id
from app.errors import InvalidOperation
from app.faust_app import app
from app.frame import ownership
from app.web import answers, parsing, routing
from app.web.guard import Handler

#: A read the owner refused as ``not_owner_confirmed`` looks the owner up again for this long (it may have moved).
REROUTE_S = 2.0
#: ... this often.
REROUTE_RETRY_S = 0.25
#: A read that finds this worker rebalancing waits this long for its tables to settle, looking this often.
SETTLE_WAIT_S = 2.0
SETTLE_POLL_S = 0.05


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


def routed(handler: Handler) -> Handler:
    """Answer on the worker that owns the user's partition, forwarding the request (its headers too) if needed.

    Here, only while this worker can show it still owns its partitions
    (app.frame.ownership) and is not rebalancing (``settling``): every
    partition read passes these checks. A rebalance is waited out for up to
    ``SETTLE_WAIT_S``, after which the owner is looked up again. An owner
    elsewhere that refuses as ``not_owner_confirmed`` is looked up again for
    ``REROUTE_S``, since the group may have moved the partition meanwhile; then
    its refusal is the answer.
    """

    @functools.wraps(handler)
    async def wrapper(view: View, request: Request, user_id: str, *args: Any, **kwargs: Any) -> Response:
        try:
            parsing.parse_user_id(user_id)
            if "op_id" in kwargs:
                check_op_id(kwargs["op_id"])
        except InvalidOperation as error:
            return answers.error(view, 400, error.reason, error.field, error.message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REROUTE_S
        settled_by = loop.time() + SETTLE_WAIT_S
        while True:
            owner = routing.owner_of(int(user_id))
            if owner is None:  # starting, or a rebalance without a verdict yet
                return answers.error(
                    view, 503, "not_ready", None, "partition assignment is not known yet; retry shortly"
                )
            if routing.is_local(owner):
                if not ownership.tracker.vouches():
                    return answers.not_owner_confirmed(view)
                if settling():
                    if loop.time() >= settled_by:
                        return answers.settling_refusal(view)
                    await asyncio.sleep(SETTLE_POLL_S)
                    continue
                return await handler(view, request, user_id, *args, **kwargs)
            response = await routing.forward(view, request, owner)
            if not routing.refused_as_unconfirmed(response) or loop.time() + REROUTE_RETRY_S > deadline:
                return response
            await asyncio.sleep(REROUTE_RETRY_S)

    return wrapper
