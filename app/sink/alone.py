"""What a sink running alone (``UBS_ROLE=sink``) adds around it: its /metrics, behind the gateway's API keys.

Such a process has no gateway, so it serves its metrics itself on
UBS_WEB_HOST:UBS_WEB_PORT. prometheus_client's own server would answer
anyone; this one asks, like the gateway's /metrics, for a key with
``metrics:read`` once any key is configured, and the process reads its keys,
refuses to start and reloads on SIGHUP as a worker does (app.web.access).
"""

from __future__ import annotations

import logging
import signal
import ssl
from typing import Any, Optional

from aiohttp import web
from mode import Service
from prometheus_client import REGISTRY, generate_latest

from app.observability.log_format import SinkWorker
from app.observability.metrics import TEXT_FORMAT
from app.web import access
from app.web.auth import METRICS_READ, Exposure


class AloneWorker(SinkWorker):
    """mode's worker for the sink alone: says first how open its metrics are, reads its keys again on SIGHUP."""

    def __init__(self, exposure: Exposure, *services: Any, **kwargs: Any) -> None:
        super().__init__(*services, **kwargs)
        self.exposure = exposure

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Called once mode has configured logging."""
        super().on_setup_root_logger(logger, level)
        access.announce(self.exposure)

    def install_signal_handlers(self) -> None:
        """mode's handlers, and SIGHUP: the API keys read again."""
        super().install_signal_handlers()
        self.loop.add_signal_handler(signal.SIGHUP, access.reload)


class MetricsServer(Service):
    """GET /metrics on ``host:port``, for as long as the process runs; over HTTPS with ``ssl_context``.

    The same settings serve the same way: a sink given the gateway's certificate serves its metrics with it.
    """

    def __init__(self, host: str, port: int, ssl_context: Optional[ssl.SSLContext] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self.runner: Optional[web.AppRunner] = None

    async def on_start(self) -> None:
        """Bind and serve."""
        pages = web.Application()
        pages.router.add_get("/metrics", scrape)
        self.runner = web.AppRunner(pages, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl_context).start()

    async def on_stop(self) -> None:
        """Stop serving."""
        if self.runner is not None:
            await self.runner.cleanup()


async def scrape(request: web.Request) -> web.Response:
    """The process's metrics in Prometheus' text format, to a key with metrics:read (any request when open)."""
    verdict = access.verdict(request.headers.get("Authorization"), (METRICS_READ,))
    if not verdict.allowed:
        return web.json_response(verdict.body(), status=verdict.status, headers=verdict.headers())
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": TEXT_FORMAT})
