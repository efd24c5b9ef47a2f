"""The ubscore agent: the only place where money changes, one message at a time.

The flow of one message, top to bottom in this file:

1. A message arrives on ``balance.operations`` (from a client) or ``balance.credits``
   (the credit leg of a transfer, sent by this agent from the payer's partition).
   If it is more than one offset past the highest one applied on its partition
   (the ``cursors`` table), Faust skipped the ones between: they are read back
   from Kafka and handled first (``fill_hole``, app.input_gaps).
2. Input that is not JSON, or cannot be tied to a (user_id, op_id), goes to the
   dead-letter topic with the error; processing goes on. An operation keyed
   differently from its user is re-sent with the user's key, so one user's state
   never splits across partitions.
3. ``ledger.decide`` says whether this message was applied already: a redelivery
   (its offset is not beyond the last one the account recorded for its stream)
   or a client retry (the results table holds this op_id from another message).
   If so nothing is applied again: the stored result is written and sent once
   more (see "Redelivery" below).
4. Otherwise the pure core (``app.ledger``) computes the new account and the one
   result event; invalid fields give a rejected event (and a dead letter). The
   agent writes the result, then the account (which records the message's
   offset), then sends the event and, for an accepted transfer, the credit leg
   keyed by the payee.

Redelivery. A RocksDB write is local and immediate; its changelog message, the
event and the offset commit follow later, and Faust flushes the producer before
it commits. A worker killed in between loses nothing Kafka has: every worker
rebuilds its tables from the changelogs when it starts (app.local_state says why
local files are not reopened), and the changelogs hold a prefix of what was
written, in order: result row, account, event. Whoever owns the partition next
gets the same messages again and finds, for each, one of three things:

- its result row and the account's recorded offset at or past it: applied, maybe
  never announced. The stored result and the account are written again and the
  event and credit leg sent again; consumers dedupe by (user_id, op_id).
- its result row beyond the account's recorded offset: the worker died between
  the two writes. The message is applied again; the new result replaces the row,
  whose event was never published (events follow the account write, see _send).
- no result row: never applied. Applied now. (If the account's offset is past it
  anyway, Faust handed it over out of order; see ledger.decide.)

Concurrency is one: the agent owns every change to its partitions' tables, and
each message is read, decided and written before the next one starts.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

from faust.types import StreamT, TopicT
from faust.types.tuples import Message

from app import failpoints, metrics
from app.app import app
from app.errors import InvalidOperation
from app.input_gaps import cursor_key, read_range
from app.ledger import (
    APPLY_LATE,
    RESEND,
    Account,
    Outcome,
    Source,
    StoredResult,
    apply_credit,
    apply_operation,
    credit_key,
    decide,
    operation_key,
    reject_invalid,
)
from app.models import Credit, Event, Operation, decode_json, identify, parse_operation
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, results
from app.topics import CREDITS, credits_topic, dead_letters_topic, events_topic, ledger_input, operations_topic

log = logging.getLogger(__name__)

DEAD_LETTER_VALUE_CHARS = 64 * 1024


@app.agent(ledger_input, name="ubscore")
async def process(stream: StreamT[bytes]) -> None:
    """Apply every operation and credit leg of the partitions this worker owns."""
    async for event in stream.events():
        message = event.message
        position = cursor_key(message.topic, message.partition)
        last = cursors.get(position)
        if last is not None and message.offset > last + 1:
            await fill_hole(message, last + 1, message.offset)
        await handle(message)
        if last is None or message.offset > last:
            cursors[position] = message.offset


async def handle(message: Message) -> None:
    """One input record, whichever of the two topics it came from."""
    if message.topic == CREDITS:
        await handle_credit(message)
    else:
        await handle_operation(message)


async def fill_hole(current: Message, start: int, end: int) -> None:
    """Apply the records Faust skipped before ``current``, read straight from Kafka, in order."""
    metrics.inc("ubscore_input_gaps_total")
    log.error("input_gap topic=%s partition=%s missing=%s-%s", current.topic, current.partition, start, end - 1)
    missed = await read_range(current.topic, current.partition, start, end)
    for message in missed:
        await handle(message)
        app.consumer.ack(message)
    log.warning("input_gap_filled topic=%s partition=%s records=%s", current.topic, current.partition, len(missed))


async def handle_operation(message: Message) -> None:
    """Validate, deduplicate and apply one client operation."""
    try:
        body = decode_json(message.value)
    except InvalidOperation as error:
        await dead_letter(message, error)
        return
    identity = identify(body)
    if identity is None:
        await dead_letter(message, _why_unidentified(body))
        return
    user_id, op_id = identity
    key = user_key(user_id)
    if message.key != key:
        await reroute(message, key, user_id, op_id)
        return
    if message.partition != partition_for(key, settings.partitions):
        # Right key, wrong partition: a producer with its own partitioner. Re-sending
        # would land in the same place, so the message is parked for an operator.
        await dead_letter(
            message,
            InvalidOperation(None, "wrong_partition", f"user {user_id} belongs on another partition of this topic"),
        )
        return

    ts = _timestamp_ms(message)
    try:
        operation: Optional[Operation] = parse_operation(body)
        error: Optional[InvalidOperation] = None
    except InvalidOperation as invalid:
        operation, error = None, invalid

    def outcome_for(account: Account) -> Outcome:
        if operation is not None:
            return apply_operation(account, operation, ts)
        assert error is not None
        return reject_invalid(account, user_id, op_id, body, error.reason, ts)

    source = Source("operations", message.offset)
    applied = apply_once(operation_key(user_id, op_id).encode(), user_id, op_id, source, outcome_for)
    if applied and error is not None:
        await dead_letter(message, error)


async def handle_credit(message: Message) -> None:
    """Apply the credit leg of a transfer on the payee's partition, once."""
    try:
        credit = Credit.from_json(json.loads(message.value))
    except (ValueError, KeyError, TypeError) as exc:
        # Only this agent writes credits; a malformed one is a bug or a forgery.
        await dead_letter(message, InvalidOperation(None, "invalid_credit", f"unreadable credit leg: {exc}"))
        return
    source = Source("credits", message.offset)
    apply_once(
        credit_key(credit).encode(), credit.payee, credit.op_id, source, lambda account: apply_credit(account, credit)
    )


def apply_once(
    result_key: bytes, user_id: int, op_id: str, source: Source, outcome_for: Callable[[Account], Outcome]
) -> bool:
    """Apply the message at ``source`` unless it already was; True when it was applied now."""
    account = Account.from_json(accounts.get(user_key(user_id)))
    stored = StoredResult.from_json(results.get(result_key))
    decision = decide(account, stored, source)
    if decision == RESEND and stored is not None:
        resend(result_key, account, stored, source)
        return False
    if decision == APPLY_LATE:
        metrics.inc("ubscore_applied_late_total")
        log.warning(
            "applied_late user_id=%s op_id=%s stream=%s offset=%s", user_id, op_id, source.stream, source.offset
        )
    record(result_key, outcome_for(account), source)
    return True


def record(result_key: bytes, outcome: Outcome, source: Source) -> None:
    """Write the result, then the account, then send the event (and any credit leg)."""
    event = outcome.event
    # Result before account: a kill between the two leaves a result of this
    # message beyond the account's recorded offset, which decide() re-applies.
    results[result_key] = StoredResult(event, source).to_json()
    accounts[user_key(event.user_id)] = outcome.account.mark(source).to_json()
    failpoints.hit("after_table_write")
    send_event(event)
    if outcome.credit is not None:
        send_credit(outcome.credit)
    failpoints.hit("after_send")
    metrics.inc("ubscore_operations_total", kind=event.kind, status=event.status)
    log.info(
        "event user_id=%s op_id=%s kind=%s status=%s reason=%s seq=%s asset=%s amount=%s available=%s locked=%s",
        event.user_id,
        event.op_id,
        event.kind,
        event.status,
        event.reason,
        event.seq,
        event.asset,
        event.amount,
        event.available,
        event.locked,
    )


def resend(result_key: bytes, account: Account, stored: StoredResult, source: Source) -> None:
    """Answer a redelivered or retried operation with its first result, and re-send all it caused."""
    stored_event = stored.event
    results[result_key] = stored.to_json()
    accounts[user_key(stored_event.user_id)] = account.mark(source).to_json()
    send_event(stored_event)
    if stored_event.kind == "transfer_out" and stored_event.accepted:
        assert stored_event.counterparty is not None
        assert stored_event.asset is not None and stored_event.amount is not None
        send_credit(
            Credit(
                payer=stored_event.user_id,
                payee=stored_event.counterparty,
                op_id=stored_event.op_id,
                asset=stored_event.asset,
                amount=stored_event.amount,
                ts=stored_event.ts,
            )
        )
    metrics.inc("ubscore_duplicates_total")
    log.info(
        "duplicate user_id=%s op_id=%s kind=%s seq=%s stream=%s offset=%s resent=true",
        stored_event.user_id,
        stored_event.op_id,
        stored_event.kind,
        stored_event.seq,
        source.stream,
        source.offset,
    )


def send_event(event: Event) -> None:
    """Publish one result on balance.events, keyed by its user."""
    _send(events_topic, user_key(event.user_id), _encode(event.to_json()))


def send_credit(credit: Credit) -> None:
    """Send a transfer's credit leg to the payee's partition."""
    _send(credits_topic, user_key(credit.payee), _encode(credit.to_json()))


def _send(topic: TopicT, key: Optional[bytes], value: bytes) -> None:
    # Every output goes through the one FIFO buffer that also carries the table
    # changelogs, so it reaches the producer after the table writes it follows.
    # Kafka orders messages only within a partition, but one broker receives the
    # producer's requests in order, so a worker killed at any moment leaves a
    # prefix of its writes: never an event without its result and account. A
    # direct ``await topic.send()`` would overtake the buffered changelog and
    # break that. Faust flushes this buffer before it commits input offsets and
    # pauses input while the buffer is over its limit.
    topic.send_soon(key=key, value=value)


async def reroute(message: Message, key: bytes, user_id: int, op_id: str) -> None:
    """Re-send an operation under its user's key; the copy is deduplicated like any retry."""
    _send(operations_topic, key, message.value)
    metrics.inc("ubscore_rerouted_total")
    log.info(
        "rerouted user_id=%s op_id=%s from_partition=%s offset=%s key=%r",
        user_id,
        op_id,
        message.partition,
        message.offset,
        message.key,
    )


async def dead_letter(message: Message, error: InvalidOperation) -> None:
    """Park a message that cannot be processed, with its error and origin, and move on."""
    text = bytes(message.value or b"").decode("utf-8", errors="replace")
    letter = {
        "error": error.as_dict(),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": _timestamp_ms(message),
        "key": message.key.decode("utf-8", errors="replace") if message.key is not None else None,
        "value": text[:DEAD_LETTER_VALUE_CHARS],
        "value_truncated": len(text) > DEAD_LETTER_VALUE_CHARS,
    }
    _send(dead_letters_topic, message.key, _encode(letter))
    metrics.inc("ubscore_dead_letters_total", reason=error.reason)
    log.warning(
        "dead_letter topic=%s partition=%s offset=%s reason=%s field=%s",
        message.topic,
        message.partition,
        message.offset,
        error.reason,
        error.field,
    )


def _why_unidentified(body: Any) -> InvalidOperation:
    try:
        parse_operation(body)
    except InvalidOperation as error:
        return error
    return InvalidOperation(None, "invalid_body", "operation names no valid user_id and op_id")


def _timestamp_ms(message: Message) -> int:
    # The broker's timestamp of the input, not the clock: a redelivered operation
    # then yields exactly the event it yielded the first time.
    return int(round(message.timestamp * 1000))


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
