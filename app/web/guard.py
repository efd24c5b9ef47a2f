"""The API key check and the audit line, as decorators every gateway view wears.

``requires`` answers 401/403 before a handler reads a body, forwards or
produces anything; ``decided`` is the same check for what a handler learns
later (the users an operation names). ``audited`` writes one line per answer of
a write or an operator action. The rules are app.web.auth's, the keys in force
app.web.access's.
"""

from __future__ import annotations

import functools
import logging
from contextvars import ContextVar
from typing import Any, Awaitable, Callable, Dict, Iterable, Optional, Tuple

from faust.web import Request, Response, View

from app.core.models import MAX_ID
from app.core.wire import decimal_text
from app.settings import settings
from app.web import access, auth

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response]]

#: The audit record of the write being answered, if any (``audited``).
_audit: ContextVar[Optional[Dict[str, Any]]] = ContextVar("audit", default=None)


def requires(*scopes: str, per_user: bool = False) -> Callable[[Handler], Handler]:
    """Refuse before the handler runs: 401 without a valid key, 403 without one of ``scopes`` (none: any key).

    With ``per_user`` the path's user must be in the key's ranges too. Every
    handler but /health's carries it (tests/agents/test_api_keys.py checks), and
    it goes outside ``routed``: a worker refuses before it forwards, and the
    owner decides again on the same Authorization header.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            path_user = kwargs.get("user_id", args[0] if args else "") if per_user else ""
            user = decimal_text(path_user, MAX_ID)  # a malformed one is the handler's 400
            verdict = decided(request, scopes, () if user is None else (user,))
            if not verdict.allowed:
                return refused(view, verdict)
            return await handler(view, request, *args, **kwargs)

        wrapper.required_scopes = scopes  # type: ignore[attr-defined]
        return wrapper

    return decorate


def decided(request: Request, scopes: Tuple[str, ...], users: Iterable[int] = ()) -> auth.Verdict:
    """What the keys in force say to this request; the key's id goes to the request's audit line, if any."""
    verdict = access.verdict(request.headers.get("Authorization"), scopes, users)
    note(key_id=verdict.key_id)
    return verdict


def refused(view: View, verdict: auth.Verdict) -> Response:
    """The 401 or 403 answer of a verdict."""
    return view.json(verdict.body(), status=verdict.status, headers=verdict.headers())


def audited(method: str, route: str) -> Callable[[Handler], Handler]:
    """One ``audit`` line per answer of a write or operator route: key id, subject, remote address, status.

    The line is written from a record the request fills as it is understood
    (``note``): the key when it is checked, the op_id or asset once the body is
    parsed. A refusal has its line too, with what was known by then. A key is
    named by its id: the secret never reaches the log.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            record: Dict[str, Any] = {"key_id": None, "op_id": None, "asset": None, "replay": None}
            token = _audit.set(record)
            try:
                response = await handler(view, request, *args, **kwargs)
            finally:
                _audit.reset(token)
            log.info(
                "audit method=%s route=%s key_id=%s op_id=%s asset=%s replay=%s remote=%s forwarded_for=%r status=%s",
                method,
                route,
                record["key_id"],
                record["op_id"],
                record["asset"],
                record["replay"],
                request.remote,  # type: ignore[attr-defined]  # faust.web.Request omits it
                request.headers.get("X-Forwarded-For") if settings.web_behind_proxy else None,
                response.status,
            )
            return response

        return wrapper

    return decorate


def note(**fields: Any) -> None:
    """Add to the audit record of the request being answered; nothing outside a write."""
    record = _audit.get()
    if record is not None:
        record.update(fields)
