"""A user's history, newest first, from the settlement database: not from the tables, so any worker answers it.

The database holds what the sink has settled, which trails the ledger; a
database that does not answer is a 503 ``database_unavailable``, never an
empty history.
"""

from __future__ import annotations

import asyncio
import logging

from faust.web import Request, Response, View

from app.core.wire import decimal_text
from app.errors import InvalidOperation, SettlementUnavailable
from app.faust_app import app
from app.sink.service import store
from app.web import answers, auth, parsing
from app.web.answers import counted
from app.web.guard import requires

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


@app.page("/accounts/{user_id}/events")
class HistoryView(View):
    """A user's settled history, from the database (any worker can ask it)."""

    @counted("history")
    @requires(auth.ACCOUNTS_READ, per_user=True)
    async def get(self, request: Request, user_id: str) -> Response:
        """The newest ``limit`` events, newest first."""
        try:
            uid = parsing.parse_user_id(user_id)
            raw_limit = parsing.query(request, ("limit",)).get("limit", str(DEFAULT_HISTORY_LIMIT))
        except InvalidOperation as error:
            return answers.error(self, 400, error.reason, error.field, error.message)
        limit = decimal_text(raw_limit, MAX_HISTORY_LIMIT)
        if limit is None:
            return answers.error(
                self, 400, "invalid_limit", "limit", f"limit must be an integer from 1 to {MAX_HISTORY_LIMIT}"
            )
        try:
            events = await store.events(uid, limit)
        except (SettlementUnavailable, OSError, asyncio.TimeoutError) as exc:
            return answers.error(
                self, 503, "database_unavailable", None, f"the settlement database is unavailable: {exc}"
            )
        except Exception as exc:  # noqa: BLE001 - the driver's own errors (timeouts, unavailable) share no base
            log.warning("history_failed user_id=%s error=%r", uid, exc)
            return answers.error(self, 503, "database_unavailable", None, "the settlement database did not answer")
        return self.json({"user_id": uid, "events": events})
