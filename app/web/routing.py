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

from typing import Optional

from faust.web import Request, Response, View
from yarl import URL

from app.faust_app import app
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts


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


def is_local(owner: URL) -> bool:
    canonical = URL(settings.canonical_url)
    return (owner.host, owner.port) == (canonical.host, canonical.port)


async def forward(view: View, request: Request, owner: URL) -> Response:
    """The owner's answer to the same request, body and headers included."""
    url = request.url.with_host(owner.host or "").with_port(owner.port)
    body = await request.read()  # type: ignore[attr-defined]  # faust.web.Request omits it
    async with app.http_client.request(method=request.method, headers=request.headers, url=url, data=body) as response:
        return view.text(await response.text(), content_type=response.content_type, status=response.status)
