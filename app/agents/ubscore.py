"""The ubscore agent: the only place where money changes, one message at a time.

The flow of one message, top to bottom in this file:

1. A message arrives on ``balance.operations`` (from a client) or ``balance.credits``
   (the credit leg of a transfer, sent by this agent from the payer's partition).
   If it is more than one offset past the highest one applied on its partition
   (the ``cursors`` table), Faust skipped the ones between: they are read back
   from Kafka and handled first (``fill_hole``, app.guards.input_gaps).
2. Input that is not JSON, or cannot be tied to a (user_id, op_id), goes to the
   dead-letter topic with the error; processing goes on. An operation on a
   partition that does not own its user (no key, another key, or a producer with
   another partitioner, such as librdkafka's CRC32) is re-sent to the owning
   partition by number, so one user's state never splits across partitions.
3. ``ledger.decide`` says whether this message was applied already: a redelivery
   (its offset is not beyond the last one the account recorded for its stream)
   or a client retry (the results table holds this op_id from another message).
   If so nothing is applied again: the stored result is written and sent once
   more (see "Redelivery" below).
4. Otherwise the pure core (``app.core.ledger``) computes the new account and the one
   result event; invalid fields give a rejected event (and a dead letter). The
   agent writes the result, then the account (which records the message's
   offset), then sends the event and, for an accepted transfer, the credit leg
   keyed by the payee.

The firewall. Whatever one message makes the reading, validation or decision
code raise, of any exception class, ends as a dead letter (``processing_failed``,
with the error) and, when the message names its user, a rejected event; the
partition goes on and the cursor moves past the message, so neither the hole
filler nor the progress watch comes back to it. Only the tables and Kafka,
the infrastructure, may raise out of the agent and stop it.

Redelivery. A RocksDB write is local and immediate; its changelog message, the
event and the offset commit follow later, and Faust flushes the producer before
it commits. A worker killed in between loses nothing Kafka has: a worker that
did not stop cleanly rebuilds its tables from the changelogs (app.guards.local_state
says why its local files are not reopened), and the changelogs hold a prefix of
what was written, in order: result row, account, event. Whoever owns the partition next
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
import traceback
from functools import partial
from typing import Any, Callable, Optional

from faust.types import StreamT, TopicT
from faust.types.tuples import Message

from app import metrics
from app.core.ledger import (
    PROCESSING_FAILED,
    Account,
    Decision,
    Origin,
    Outcome,
    StoredResult,
    apply_credit,
    apply_operation,
    credit_key,
    decide,
    operation_key,
    reject_invalid,
)
from app.core.models import Credit, Event, read_operation
from app.core.wire import decode_json
from app.errors import InvalidOperation
from app.faust_app import app
from app.guards import failpoints
from app.guards.input_gaps import cursor_key, read_range
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, results
from app.topics import CREDITS, credits_topic, dead_letters_topic, events_topic, ledger_input, operations_topic

log = logging.getLogger(__name__)

DEAD_LETTER_VALUE_CHARS = 64 * 1024
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_TRACE_CHARS = 4000


@app.agent(ledger_input, name="ubscore")
async def process(stream: StreamT[bytes]) -> None:
    """Apply every operation and credit leg of the partitions this worker owns."""
    async for event in stream.events():
        message = event.message
        position = cursor_key(message.topic, message.partition)
        last = cursors.get(position)
        if last is not None and message.offset > last + 1:
            await fill_hole(message, last + 1, message.offset)
        handle(message)
        if last is None or message.offset > last:
            cursors[position] = message.offset


def handle(message: Message) -> None:
    """One input record, whichever of the two topics it came from."""
    if message.topic == CREDITS:
        handle_credit(message)
    else:
        handle_operation(message)


async def fill_hole(current: Message, start: int, end: int) -> None:
    """Apply the records Faust skipped before ``current``, read straight from Kafka, in order."""
    metrics.inc("ubscore_input_gaps_total")
    log.error("input_gap topic=%s partition=%s missing=%s-%s", current.topic, current.partition, start, end - 1)
    missed = await read_range(current.topic, current.partition, start, end)
    for message in missed:
        handle(message)
        app.consumer.ack(message)
    log.warning("input_gap_filled topic=%s partition=%s records=%s", current.topic, current.partition, len(missed))


def handle_operation(message: Message) -> None:
    """Validate, deduplicate and apply one client operation."""
    try:
        intake = read_operation(message.value, settings.max_body_bytes)
        home = partition_for(user_key(intake.user_id), settings.partitions)
    except InvalidOperation as error:
        dead_letter(message, error)
        return
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        dead_letter(message, processing_failed(message, exc))
        return
    if message.partition != home:
        move(message, intake.user_id, intake.op_id, home)
        return

    ts = _timestamp_ms(message)

    def outcome_for(account: Account) -> Outcome:
        if intake.operation is not None:
            return apply_operation(account, intake.operation, ts)
        assert intake.error is not None
        return reject_invalid(account, intake.user_id, intake.op_id, intake.body, intake.error.reason, ts)

    def failure_for(account: Account) -> Outcome:
        return reject_invalid(account, intake.user_id, intake.op_id, intake.body, PROCESSING_FAILED, ts)

    origin = Origin("operations", message.offset)
    key = operation_key(intake.user_id, intake.op_id).encode()
    applied = apply_once(message, key, intake.user_id, origin, outcome_for, failure_for)
    if applied and intake.error is not None:
        dead_letter(message, intake.error)


def handle_credit(message: Message) -> None:
    """Apply the credit leg of a transfer on the payee's partition, once."""
    try:
        credit = Credit.from_json(decode_json(message.value))
    except InvalidOperation as error:
        # Only this agent writes credits; a malformed one is a bug or a forgery.
        dead_letter(message, error)
        return
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        dead_letter(message, processing_failed(message, exc))
        return
    origin = Origin("credits", message.offset)
    apply_once(message, credit_key(credit).encode(), credit.payee, origin, partial(apply_credit, credit=credit))


def apply_once(
    message: Message,
    result_key: bytes,
    user_id: int,
    origin: Origin,
    outcome_for: Callable[[Account], Outcome],
    failure_for: Optional[Callable[[Account], Outcome]] = None,
) -> bool:
    """Apply the message at ``origin`` unless it already was; True when it was applied now.

    Reading and writing the tables is infrastructure: if that raises, the agent
    stops, as it must. The decision in between depends only on the message and the
    account; if it raises, the message is dead-lettered and, unless it has a stored
    result already, answered with what ``failure_for`` gives (a rejection that takes
    the next seq and moves no money). A credit leg has no such answer, its payer
    has paid: it is only dead-lettered.
    """
    account = Account.from_json(accounts.get(user_key(user_id)))
    stored = StoredResult.from_json(results.get(result_key))
    try:
        decision = decide(account, stored, origin)
        outcome: Optional[Outcome] = None
        if decision != Decision.RESEND:
            failpoints.hit("raise_in_decision", failpoints.raise_injected)
            outcome = outcome_for(account)
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        dead_letter(message, processing_failed(message, exc))
        # A stored result is this operation's one result: it is never replaced by a failure.
        if stored is None and failure_for is not None:
            answer_failure(message, result_key, origin, lambda: failure_for(account))
        return False
    if outcome is None:
        assert stored is not None  # decide() resends only what is stored
        resend(result_key, account, stored, origin)
        return False
    if decision == Decision.APPLY_LATE:
        metrics.inc("ubscore_applied_late_total")
        log.warning("applied_late user_id=%s stream=%s offset=%s", user_id, origin.stream, origin.offset)
    record(result_key, outcome, origin)
    return True


def answer_failure(message: Message, result_key: bytes, origin: Origin, rejection: Callable[[], Outcome]) -> None:
    """Record the ``processing_failed`` rejection of a message whose decision raised, if it can be built."""
    try:
        outcome = rejection()
    except Exception as exc:  # noqa: BLE001 - the rejection failed too: the dead letter is all there is
        log.error(
            "processing_failed_unanswered topic=%s partition=%s offset=%s error=%r",
            message.topic,
            message.partition,
            message.offset,
            exc,
        )
        return
    record(result_key, outcome, origin)


def record(result_key: bytes, outcome: Outcome, origin: Origin) -> None:
    """Write the result, then the account, then send the event (and any credit leg)."""
    event = outcome.event
    # Result before account: a kill between the two leaves a result of this
    # message beyond the account's recorded offset, which decide() re-applies.
    results[result_key] = StoredResult(event, origin).to_json()
    accounts[user_key(event.user_id)] = outcome.account.mark(origin).to_json()
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


def resend(result_key: bytes, account: Account, stored: StoredResult, origin: Origin) -> None:
    """Answer a redelivered or retried operation with its first result, and re-send all it caused."""
    stored_event = stored.event
    results[result_key] = stored.to_json()
    accounts[user_key(stored_event.user_id)] = account.mark(origin).to_json()
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
        origin.stream,
        origin.offset,
    )


def send_event(event: Event) -> None:
    """Publish one result on balance.events, keyed by its user."""
    _send(events_topic, user_key(event.user_id), _encode(event.to_json()))


def send_credit(credit: Credit) -> None:
    """Send a transfer's credit leg to the payee's partition."""
    _send(credits_topic, user_key(credit.payee), _encode(credit.to_json()))


def _send(topic: TopicT, key: Optional[bytes], value: bytes, partition: Optional[int] = None) -> None:
    # Every output goes through the one FIFO buffer that also carries the table
    # changelogs, so it reaches the producer after the table writes it follows.
    # Kafka orders messages only within a partition, but one broker receives the
    # producer's requests in order, so a worker killed at any moment leaves a
    # prefix of its writes: never an event without its result and account. A
    # direct ``await topic.send()`` would overtake the buffered changelog and
    # break that. Faust flushes this buffer before it commits input offsets and
    # pauses input while the buffer is over its limit.
    topic.send_soon(key=key, value=value, partition=partition)


def move(message: Message, user_id: int, op_id: str, home: int) -> None:
    """Re-send an operation to the partition that owns its user, by number, under the user's key.

    The number is explicit so that no partitioner, ours or a client's, can send it
    astray again. A crash before the input commit sends a second copy; it is
    deduplicated by op_id like any client retry.
    """
    _send(operations_topic, user_key(user_id), message.value or b"", partition=home)
    metrics.inc("ubscore_rerouted_total")
    log.info(
        "rerouted user_id=%s op_id=%s from_partition=%s to_partition=%s offset=%s key=%r",
        user_id,
        op_id,
        message.partition,
        home,
        message.offset,
        _clip(message.key, DEAD_LETTER_KEY_BYTES),
    )


def dead_letter(message: Message, error: InvalidOperation) -> None:
    """Park a message that cannot be processed, with its error and origin, and move on.

    The letter is bounded whatever the input (value and key are cut), so it always
    fits in a Kafka message; it is keyed like the input unless that key is too long.
    """
    text = bytes(message.value or b"").decode("utf-8", errors="replace")
    key = message.key
    letter = {
        "error": error.as_dict(),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": _timestamp_ms(message),
        "key": _clip(key, DEAD_LETTER_KEY_BYTES),
        "value": text[:DEAD_LETTER_VALUE_CHARS],
        "value_truncated": len(text) > DEAD_LETTER_VALUE_CHARS,
    }
    short_key = key if key is not None and len(key) <= DEAD_LETTER_KEY_BYTES else None
    _send(dead_letters_topic, short_key, _encode(letter))
    metrics.inc("ubscore_dead_letters_total", reason=error.reason)
    log.warning(
        "dead_letter topic=%s partition=%s offset=%s reason=%s field=%s",
        message.topic,
        message.partition,
        message.offset,
        error.reason,
        error.field,
    )


def processing_failed(message: Message, exc: Exception) -> InvalidOperation:
    """The error a dead letter carries when handling the message raised something unforeseen."""
    metrics.inc("ubscore_processing_failures_total")
    log.error(
        "processing_failed topic=%s partition=%s offset=%s error=%r",
        message.topic,
        message.partition,
        message.offset,
        exc,
    )
    trace = "".join(traceback.format_exception(exc))
    return InvalidOperation(
        None, PROCESSING_FAILED, f"{type(exc).__name__}: {str(exc)[:500]}\n{trace[-DEAD_LETTER_TRACE_CHARS:]}"
    )


def _clip(raw: Optional[bytes], limit: int) -> Optional[str]:
    if raw is None:
        return None
    return bytes(raw[:limit]).decode("utf-8", errors="replace")


def _timestamp_ms(message: Message) -> int:
    # The broker's timestamp of the input, not the clock: a redelivered operation
    # then yields exactly the event it yielded the first time.
    return int(round(message.timestamp * 1000))


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
