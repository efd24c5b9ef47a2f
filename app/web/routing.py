"""Which worker owns a user: the partition from our own partitioner, the owner from the last assignment.

Faust's router finds a key's partition with its producer's metadata for the
table's changelog topic. The checkpoint writes the changelogs through a producer
of its own, so Faust's producer never sends there, and aiokafka keeps metadata
only for the topics its producer sends to: after the first metadata refresh
(every five minutes, or on a leader change) Faust's router could no longer place
any user, and every routed read answered 503 for as long as the worker ran.

The partition needs no metadata: every user-keyed topic and table has
``UBS_PARTITIONS`` partitions under one partitioner (app.partitioning). The owner
of each partition comes from the assignment Faust hands every member at each
rebalance (``assignor.table_metadata``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional

import aiohttp
from faust.web import Request, Response, View
from yarl import URL

from app.faust_app import app
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts
from app.web import peers, tls

log = logging.getLogger(__name__)

#: The owner's headers a forwarded answer keeps (besides its status, body and content type).
FORWARDED_HEADERS = ("Retry-After",)


def owner_of(user_id: int) -> Optional[URL]:
    """The web address of the worker that owns the user's partition; None while no assignment names one."""
    return owner_of_partition(partition_for(user_key(user_id), settings.partitions))


def owner_of_partition(partition: int) -> Optional[URL]:
    """The web address of the worker that owns a ledger partition; None while no assignment names one."""
    changelog = accounts.changelog_topic.get_topic_name()
    for host, topics in app.assignor.table_metadata(changelog).items():
        if partition in topics.get(changelog, ()):
            return URL(host)
    return None


def refused_as_unconfirmed(response: Response) -> bool:
    """Whether a forwarded answer is the owner's 503 ``not_owner_confirmed`` (app.frame.ownership)."""
    if response.status != 503:
        return False
    try:
        body = json.loads(response.body)  # type: ignore[attr-defined]  # Faust's Response omits it
    except (TypeError, ValueError):
        return False
    return isinstance(body, dict) and body.get("error") == "not_owner_confirmed"


def is_local(owner: URL) -> bool:
    canonical = URL(settings.canonical_url)
    return (owner.host, owner.port) == (canonical.host, canonical.port)


async def forward(view: View, request: Request, owner: URL) -> Response:
    """The owner's answer to the same request, body and headers included; 503 when the owner cannot be reached.

    An owner that refuses the connection, fails the TLS handshake, shows a
    certificate the CA file does not vouch for, or does not answer in time
    is a dependency that is unavailable, not this worker's error.
    """
    body = await request.read()  # type: ignore[attr-defined]  # faust.web.Request omits it
    try:
        url = peers.at_owner(owner, request.url)
        async with peers.session().request(method=request.method, headers=request.headers, url=url, data=body) as got:
            # The owner's Retry-After goes with its 503: a client must not come back sooner than it said.
            kept = {name: got.headers[name] for name in FORWARDED_HEADERS if name in got.headers}
            return view.text(await got.text(), content_type=got.content_type, status=got.status, headers=kept)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        reason = tls.describe(exc)
        log.warning("route_failed owner=%s path=%s error=%r", owner, request.path, reason)  # type: ignore[attr-defined]
        message = f"the worker that owns this data ({owner}) could not be reached: {reason}; retry shortly"
        return view.json({"error": "owner_unavailable", "field": None, "message": message}, status=503)
