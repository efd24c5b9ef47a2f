"""The answers every view shares: errors, 503s that say when to come back, and the count of every answer.

A client's mistake is a 4xx JSON body naming the field; an unavailable
dependency or a worker that may not answer now is a 503 with ``Retry-After``,
never a false 202 or an answer from tables that may be behind. ``counted``
wraps every view: it counts and times each answer per view and status, answers
a body aiohttp refused (413, 400, 499) and turns any other stray exception into
a 500, so no view ends without an answer or a count.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any, Callable, Optional

from aiohttp import web
from faust.web import Request, Response, View

from app.frame import ownership
from app.observability import metrics
from app.settings import settings
from app.web.guard import Handler

log = logging.getLogger(__name__)

#: A produce Kafka has not confirmed within this is answered 503 ``kafka_unavailable`` (a submit, a registration).
PRODUCE_TIMEOUT_S = 10.0
#: When a refused read may come back: the owner answers again once its coordinator does, or the group moves
#: its partitions (a session timeout after its last heartbeat) and another worker answers.
UNCONFIRMED_RETRY_AFTER_S = 1.0
#: When a read refused during a rebalance may come back: most rebalances settle within a second or two.
SETTLING_RETRY_AFTER_S = 1.0


def error(view: View, status: int, reason: str, field: Optional[str], message: str, **extra: Any) -> Response:
    return view.json({"error": reason, "field": field, "message": message, **extra}, status=status)


def retry_later(
    view: View, reason: str, field: Optional[str], message: str, retry_after_s: float, **extra: Any
) -> Response:
    """A 503 that may succeed later, not now; ``Retry-After`` says when, in whole seconds."""
    body = {"error": reason, "field": field, "message": message, **extra}
    return view.json(body, status=503, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def overloaded(view: View, message: str, retry_after_s: float, **extra: Any) -> Response:
    """503 ``overloaded``: too many requests wait or too much work is ahead, for now."""
    return retry_later(view, "overloaded", None, message, retry_after_s, **extra)


def not_owner_confirmed(view: View, message: Optional[str] = None, **extra: Any) -> Response:
    """503 ``not_owner_confirmed``: this worker cannot show it still owns the partition (app.frame.ownership).

    Its tables may be behind a new owner's, so it answers nothing from them;
    the client (and a forwarding worker) asks again, here or elsewhere.
    """
    tracker = ownership.tracker
    silence_s = tracker.silence_s()
    return retry_later(
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


def settling_refusal(view: View) -> Response:
    """503 ``not_ready``: this worker is taking over partitions and reading their changelogs (app.web.at_owner)."""
    return retry_later(
        view,
        "not_ready",
        None,
        "this worker is rebalancing: its tables are being brought up to date from the changelogs; "
        "retry after Retry-After",
        SETTLING_RETRY_AFTER_S,
    )


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
                response = refusal or error(
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
        return error(view, 413, "body_too_large", None, f"body is limited to {limit} bytes", limit_bytes=limit)
    if isinstance(exc, web.RequestPayloadError):
        return error(view, 400, "invalid_body", None, f"the body cannot be read: {exc}")
    if isinstance(exc, OSError) and request.transport is None:  # type: ignore[attr-defined]  # Faust's type omits it
        return error(view, 499, "client_closed_request", None, "the connection closed before the body came")
    return None
