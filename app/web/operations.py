"""Operations: submitted on any worker, produced to balance.operations, and their results read at the owner.

A submit is validated and authorised here, then produced keyed by user; 202
says Kafka has it, and with ``?wait=true`` the answer is its result, waited for
at the user's owner (app.web.waiting). A result is read from the owner's results
table (``GET /operations/{user_id}/{op_id}``), which a waiting gateway also asks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import Optional, Tuple

from faust.web import Request, Response, View

from app.core.assets import to_minor_units
from app.core.models import Command, Event, Trade, parse_operation, users_named
from app.core.wire import decimal_text, decode_json
from app.errors import InvalidOperation
from app.faust_app import app
from app.frame import failpoints
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.topics import operations_topic
from app.web import answers, auth, parsing, waiting
from app.web.answers import counted
from app.web.asset_views import registered
from app.web.at_owner import routed
from app.web.guard import audited, decided, note, refused, requires
from app.web.waiting import WAIT_RETRY_AFTER_S, local_result, wait_result, wait_slot

log = logging.getLogger(__name__)

MAX_OFFSET = 2**63 - 1  # Kafka offsets are signed 64-bit
#: A dead letter's place, PARTITION:OFFSET, as ``ubscore dlq`` names it.
_POSITION = re.compile(r"\d{1,10}:\d{1,19}")


def _parse_offset(raw: str) -> int:
    value = 0 if raw == "0" else decimal_text(raw, MAX_OFFSET)
    if value is None:
        raise InvalidOperation("offset", "invalid_query", f"offset must be an integer between 0 and {MAX_OFFSET}")
    return value


def _same_request(stored: Event, operation: Command) -> bool:
    """Whether a stored result answers this request; an unlock of a whole hold named no amount."""
    if isinstance(operation, Trade):
        return stored.trade == operation
    kind = "transfer_out" if operation.kind == "transfer" else operation.kind
    counterparty = operation.to_user_id if operation.kind == "transfer" else None
    amount = stored.amount if operation.amount is None else operation.amount
    return (stored.kind, stored.asset, stored.amount, stored.counterparty, stored.hold_id) == (
        kind,
        operation.asset,
        amount,
        counterparty,
        operation.hold_id,
    )


def _submit_query(request: Request) -> Tuple[bool, Optional[str]]:
    """A submit's ``?wait`` and ``?replay`` (a dead letter's place), or InvalidOperation naming the bad one."""
    query = parsing.query(request, ("wait", "replay"))
    wait, replay = query.get("wait", "false").lower(), query.get("replay")
    if wait not in ("true", "false", "1", "0"):
        raise InvalidOperation("wait", "invalid_query", "wait must be true or false")
    if replay is not None and not _POSITION.fullmatch(replay):
        raise InvalidOperation("replay", "invalid_query", "replay must be PARTITION:OFFSET of a dead letter")
    return wait in ("true", "1"), replay


@app.page("/operations")
class OperationsView(View):
    """Submit operations: validated here, produced to balance.operations keyed by user."""

    @audited("POST", "/operations")
    @counted("submit")
    @requires()  # a valid key; its scope, operations:write or operator, depends on ?replay (below)
    async def post(self, request: Request) -> Response:
        """202 once Kafka has the operation; with ?wait=true, 200 and its result event.

        ``?replay=PARTITION:OFFSET`` marks the replay of a dead letter (``ubscore
        dlq replay``), an operator's action, audited with the letter's place.
        Every user the operation names must be in the key's ranges.
        """
        try:
            wait, replay = _submit_query(request)
        except InvalidOperation as error:
            return answers.error(self, 400, error.reason, error.field, error.message)
        note(replay=replay)
        scope = (auth.OPERATOR,) if replay is not None else (auth.OPERATIONS_WRITE,)
        verdict = decided(request, scope)
        if not verdict.allowed:
            return refused(self, verdict)
        raw = await parsing.read_body(request)
        try:
            operation = parse_operation(to_minor_units(decode_json(raw), registered))
        except InvalidOperation as error:
            status = 400 if error.field is None else 422
            return answers.error(self, status, error.reason, error.field, error.message)
        note(op_id=operation.op_id)
        verdict = decided(request, scope, users_named(operation))
        if not verdict.allowed:
            return refused(self, verdict)
        # A wait holds its slot from before the operation is produced: one turned away has submitted nothing.
        with wait_slot(settings.wait_timeout_s if wait else 0) as held:
            if not held:
                log.warning(
                    "waits_full view=submit user_id=%s op_id=%s limit=%s",
                    operation.user_id,
                    operation.op_id,
                    waiting.waits.limit,
                )
                return answers.overloaded(
                    self,
                    "too many requests are waiting for results on this worker; nothing was submitted: "
                    "retry with the same op_id after Retry-After",
                    WAIT_RETRY_AFTER_S,
                    op_id=operation.op_id,
                )
            return await self._submit(operation, wait, request.headers.get("Authorization"))

    async def _submit(self, operation: Command, wait: bool, authorization: Optional[str]) -> Response:
        """Produce the operation: 202 once Kafka has it, or with ``wait`` its result (``_wait_for_result``)."""
        payload = json.dumps(operation.to_json(), separators=(",", ":")).encode()
        try:
            # The plain producer, never topic.send: under exactly_once that would write the
            # operation inside the worker's open transaction, invisible to the (read_committed)
            # agent until a commit that only processed input triggers, so it would never come.
            delivery = await app.producer.send(
                operations_topic.get_topic_name(), user_key(operation.user_id), payload, None, None, None
            )
            metadata = await asyncio.wait_for(asyncio.shield(delivery), timeout=answers.PRODUCE_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
            log.warning("submit_failed user_id=%s op_id=%s error=%r", operation.user_id, operation.op_id, exc)
            return answers.error(
                self,
                503,
                "kafka_unavailable",
                None,
                "the operation was not confirmed by Kafka; retry with the same op_id (it is applied at most once)",
                op_id=operation.op_id,
            )
        failpoints.hit("after_produce")
        log.info(
            "submitted user_id=%s op_id=%s kind=%s partition=%s offset=%s",
            operation.user_id,
            operation.op_id,
            operation.kind,
            metadata.partition,
            metadata.offset,
        )
        if not wait:
            return self.json({"op_id": operation.op_id, "status": "submitted"}, status=202)
        # The operation's place on its partition: the wait measures how fast the owner approaches it.
        offset = (
            metadata.offset
            if metadata.partition == partition_for(user_key(operation.user_id), settings.partitions)
            else None
        )
        return await self._wait_for_result(operation, offset, authorization)

    async def _wait_for_result(
        self, operation: Command, offset: Optional[int], authorization: Optional[str]
    ) -> Response:
        waited = await wait_result(operation.user_id, operation.op_id, settings.wait_timeout_s, offset, authorization)
        found = waited.result
        if found is None and waited.backlog_s is not None:
            log.warning(
                "wait_refused user_id=%s op_id=%s backlog_s=%.1f", operation.user_id, operation.op_id, waited.backlog_s
            )
            return answers.overloaded(
                self,
                "the operation is in Kafka and will be applied, but not within the wait; "
                "poll GET /operations/{user_id}/{op_id} after Retry-After, or retry with the same op_id",
                waited.backlog_s,
                op_id=operation.op_id,
                backlog_s=round(waited.backlog_s, 1),
            )
        if found is None and waited.unconfirmed:
            return answers.not_owner_confirmed(
                self,
                "the operation is in Kafka and will be applied, but the worker holding the user's partition cannot "
                "show it still owns it; poll GET /operations/{user_id}/{op_id} after Retry-After, on any worker, or "
                "retry with the same op_id",
                op_id=operation.op_id,
            )
        if found is None and waited.turned_away:
            return answers.overloaded(
                self,
                "the operation is in Kafka and will be applied, but the worker that owns the user has too many "
                "requests waiting; poll GET /operations/{user_id}/{op_id} after Retry-After, or retry with the same "
                "op_id",
                WAIT_RETRY_AFTER_S,
                op_id=operation.op_id,
            )
        if found is None:
            return answers.error(
                self,
                504,
                "result_timeout",
                None,
                "the operation is in Kafka but has no result yet; it may still be applied. "
                "Poll GET /operations/{user_id}/{op_id} or retry with the same op_id",
                op_id=operation.op_id,
            )
        if not _same_request(Event.from_json(found), operation):
            return answers.error(
                self,
                409,
                "op_id_reused",
                "op_id",
                "this op_id already has a result for a different operation",
                result=found,
            )
        return self.json(found, status=200)


@app.page("/operations/{user_id}/{op_id}")
class OperationResultView(View):
    """The result event of one operation, from the results table of the owning worker."""

    @counted("result")
    @requires(auth.ACCOUNTS_READ, auth.OPERATIONS_WRITE, auth.OPERATOR, per_user=True)
    @routed
    async def get(self, request: Request, user_id: str, op_id: str) -> Response:
        """200 with the event, or 404 while (or if) it has none; ``?wait_s=`` waits that long for it first."""
        try:
            query = parsing.query(request, ("wait_s", "offset"))
            wait_s = float(query.get("wait_s", "0"))
            offset = _parse_offset(query["offset"]) if "offset" in query else None
        except InvalidOperation as error:
            return answers.error(self, 400, error.reason, error.field, error.message)
        except ValueError:
            return answers.error(self, 400, "invalid_query", "wait_s", "wait_s must be a number of seconds")
        if not (math.isfinite(wait_s) and 0 <= wait_s <= settings.wait_timeout_s):
            return answers.error(
                self, 400, "invalid_query", "wait_s", f"wait_s must be between 0 and {settings.wait_timeout_s}"
            )
        with wait_slot(wait_s) as held:
            if not held:
                log.warning("waits_full view=result user_id=%s op_id=%s limit=%s", user_id, op_id, waiting.waits.limit)
                return answers.overloaded(
                    self,
                    "too many requests are waiting for results on this worker; retry after Retry-After",
                    WAIT_RETRY_AFTER_S,
                )
            lookup = await local_result(int(user_id), op_id, wait_s, offset)
        if lookup.unconfirmed:
            return answers.not_owner_confirmed(self)
        if lookup.result is None:
            # How far this worker is from the operation, for a gateway measuring its wait.
            return answers.error(
                self,
                404,
                "unknown_operation",
                "op_id",
                "no result for this op_id (yet)",
                applied_offset=lookup.applied,
                applied_total=lookup.applied_total,
                behind=lookup.behind,
            )
        return self.json(lookup.result)
