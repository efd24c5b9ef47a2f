"""The gateway's one HTTP client to the other workers: routed reads, waits at the owner, asset registrations.

Every call from this worker to another goes through ``session()``: https to an
owner that advertises it, checked against ``UBS_WEB_TLS_CAFILE`` (app.web.tls),
over a bounded pool of ``UBS_WEB_ROUTE_CONNECTIONS`` connections per worker. A
request that finds them all busy waits ``CONNECT_TIMEOUT_S`` at most (the wait,
the connection and the TLS handshake together), then fails like an owner that
does not answer: a busy gateway sheds routed reads with 503 instead of piling
up connections to one owner or queueing without end.

The session is made on first use, inside the running loop (aiohttp binds it
there), and closed when the gateway stops (app.faust_app.GatewayWeb).
"""

from __future__ import annotations

from typing import Optional

import aiohttp
from yarl import URL

from app.settings import Settings, settings
from app.web import tls

#: Waiting for a free connection, connecting and the TLS handshake, together.
CONNECT_TIMEOUT_S = 5.0
#: How much longer than ``UBS_WAIT_TIMEOUT_S`` (the longest an owner waits before it answers) a call may take.
ANSWER_GRACE_S = 30.0

_session: Optional[aiohttp.ClientSession] = None


class PlainOwner(aiohttp.ClientError):
    """The owner advertises plain http while this gateway serves https: the client's key would cross in the clear.

    A ClientError, so that every caller handles it as an owner that cannot be reached.
    """


def session(config: Settings = settings) -> aiohttp.ClientSession:
    """The session to the other workers, made on first use in the running loop."""
    global _session
    if _session is None or _session.closed:
        _session = tls.client_session(
            config,
            limit=config.web_route_connections * config.partitions,  # one owner per partition at most
            limit_per_host=config.web_route_connections,
            timeout=timeout(config.wait_timeout_s + ANSWER_GRACE_S),
        )
    return _session


async def close() -> None:
    """At the gateway's stop, once it serves no request: the pool's connections are closed."""
    global _session
    if _session is not None:
        await _session.close()
        _session = None


def timeout(total_s: float) -> aiohttp.ClientTimeout:
    """A call's time limit: ``total_s`` for all of it, ``CONNECT_TIMEOUT_S`` of it to get a connection."""
    return aiohttp.ClientTimeout(total=total_s, connect=CONNECT_TIMEOUT_S)


def at_owner(owner: URL, url: URL, config: Settings = settings) -> URL:
    """``url`` (path and query as they are) at the owner, by the scheme the owner advertises.

    A gateway serving https never calls an owner over plain http (PlainOwner):
    the client's Authorization header goes with the call.
    """
    if config.web_tls and owner.scheme != "https":
        raise PlainOwner(f"the owner {owner} advertises plain http while this worker serves https")
    return url.with_scheme(owner.scheme).with_host(owner.host or "").with_port(owner.port)
