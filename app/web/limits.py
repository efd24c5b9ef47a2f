"""How long a client may take to send a request, and to sit on an idle connection: the gateway's timeouts.

aiohttp bounds what a request may hold (a line and each header 8 KiB, 128 headers,
a body ``client_max_size``: UBS_MAX_BODY_BYTES) and closes an idle keep-alive
connection (``keepalive_timeout``: UBS_WEB_KEEPALIVE_TIMEOUT_S), but it waits long
for the rest of a request: unfinished headers until that keep-alive timeout (by
default an hour; in versions before aiohttp#13681, for a connection's first
request, for ever), an unfinished body for ever. A client sending its headers a
byte at a time (slowloris), or its body, holds its connection that long, and for
a body a task. So each connection here has a deadline for the request it is
receiving: its line and headers within UBS_WEB_HEADER_TIMEOUT_S of its first
byte (of the connection's opening, for the first request: a connection that
sends nothing is no client), its body within UBS_WEB_BODY_TIMEOUT_S of its
headers. A client past its deadline is disconnected, counted in
``ubscore_http_connections_dropped_total`` and logged (``http_client_dropped``).

aiohttp has no such deadline and no public way to give its connections one: Faust
builds its runner, the runner its server, the server aiohttp's own connection
class. ``runner`` builds the same runner with a server making
``GatewayRequestHandler``, which reads three private attributes of aiohttp's
connection (``_waiter``, set while it waits for a request; ``_request_count`` and
``_messages``, the requests parsed so far) and the kwargs aiohttp gave its server.
tests/agents/test_gateway_limits.py runs them on a real server with raw sockets,
so an aiohttp upgrade that moves one fails there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Optional

from aiohttp.streams import StreamReader
from aiohttp.web import Application, AppRunner, RequestHandler, Server

from app.observability import metrics
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """The gateway's timeouts, in seconds (app.settings: UBS_WEB_*_TIMEOUT_S)."""

    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(settings.web_header_timeout_s, settings.web_body_timeout_s, settings.web_keepalive_timeout_s)


def runner(web_app: Application, limits: Limits) -> AppRunner:
    """The runner Faust would build for the gateway (no access log), with the limits on every connection."""
    return GatewayRunner(web_app, limits, access_log=None, keepalive_timeout=limits.keepalive_timeout_s)


class GatewayRunner(AppRunner):
    """aiohttp's runner, whose server makes GatewayRequestHandler connections."""

    def __init__(self, web_app: Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(web_app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> Server:
        """aiohttp's server, made as aiohttp makes it (the app started, frozen), then remade with our connections."""
        made = await super()._make_server()
        return GatewayServer(made, self.limits)


class GatewayServer(Server):
    """aiohttp's server with the same handler and options; its connections have deadlines."""

    def __init__(self, made: Server, limits: Limits) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,  # noqa: SLF001 - what aiohttp passes each connection (keep-alive, access log, debug)
        )
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class GatewayRequestHandler(RequestHandler):
    """One connection: aiohttp's, with a deadline for the request it is receiving (see the module's docstring).

    One timer at a time: for the headers while the connection waits for a
    request, then for the body of the request whose headers came, until that body
    is whole. A timer that fires checks that what it timed is still incomplete.
    """

    def __init__(self, manager: Server, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits
        self._deadline: Optional[asyncio.TimerHandle] = None
        self._body: Optional[StreamReader] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._expect_headers()

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count > parsed and (self._body is None or self._body.is_eof()):
            # Headers whole: the last request parsed is the one whose body may still be arriving. (With a
            # body still unfinished, what was parsed is aiohttp's 400 for garbage after it: it stays timed.)
            self._expect_body(self._messages[-1][1])
        elif self._body is not None and self._body.is_eof():
            self._stop()
        elif self._deadline is None and self._awaiting_request():
            self._expect_headers()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._stop()
        super().connection_lost(exc)

    def _awaiting_request(self) -> bool:
        """Whether the connection waits for a request's headers (not handling one, nor answering, nor lingering)."""
        return self._waiter is not None and not self._waiter.done()

    def _expect_headers(self) -> None:
        self._stop()
        self._deadline = self._loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _expect_body(self, body: StreamReader) -> None:
        self._stop()
        if not body.is_eof():
            self._body = body
            self._deadline = self._loop.call_later(self.limits.body_timeout_s, self._body_late)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._body = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self._awaiting_request():
            self._drop("header_timeout", self.limits.header_timeout_s)

    def _body_late(self) -> None:
        body, self._deadline, self._body = self._body, None, None
        if body is not None and not body.is_eof():
            self._drop("body_timeout", self.limits.body_timeout_s)

    def _drop(self, reason: str, after_s: float) -> None:
        """Disconnect the client; a view reading its body gets a ConnectionResetError (app.web.answers.counted)."""
        peer = self.peername
        remote = peer[0] if isinstance(peer, tuple) else peer
        log.info("http_client_dropped reason=%s remote=%s after_s=%s", reason, remote, after_s)
        metrics.HTTP_CONNECTIONS_DROPPED.labels(reason=reason).inc()
        self.force_close()
