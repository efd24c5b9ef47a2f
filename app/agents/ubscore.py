"""The ubscore agent: the only place where money changes, a batch at a time.

The flow, top to bottom in this file:

1. Messages arrive on ``balance.operations`` (from clients) and
   ``balance.credits`` (legs: the credit legs of transfers, sent by this agent
   from the payer's partition, and hold expiries, sent by the expiry timer of
   app.agents.expiry), each partition's in offset order, and are handled in that
   order into the open batch. A batch is what arrives while the previous one is
   being checkpointed, up to ``UBS_BATCH_MAX`` messages (app.agents.checkpoint).
2. Per message: if it is more than one offset past the highest one applied on
   its partition (the ``cursors`` table), Faust skipped the ones between: they
   are read back from Kafka and handled first (``read_hole``, app.guards.input_gaps).
3. Input that is not JSON, or cannot be tied to a (user_id, op_id), goes to the
   dead-letter topic with the error; processing goes on. An operation on a
   partition that does not own its user (no key, another key, or a producer with
   another partitioner, such as librdkafka's CRC32) is re-sent to the owning
   partition by number, so one user's state never splits across partitions.
4. ``ledger.decide`` says whether this message was applied already: a redelivery
   (its offset is not beyond the last one the account recorded for its stream)
   or a client retry (the results table holds this op_id from another message).
   If so nothing is applied again: the stored result is written and sent once
   more (see "Redelivery" below).
5. Otherwise the pure core (``app.core.ledger``) computes the new account and the
   one result event; invalid fields give a rejected event (and a dead letter).
   The decision starts from the account row and the holds the message names
   (``load_account``: each hold is a row of its own in the ``holds`` table, so
   a user with 50,000 open holds costs what a user with one does). The result
   row, the account (which records the message's offset), each hold row the
   decision opened, changed or closed (``put_account``), the event and any legs
   go into the batch (app.agents.batch), an overlay in front of the tables: the
   next message of the same user sees this one's account. A hold opened marks
   its id as used (``hold_key``) and, if it expires, enters the ``expiries``
   table the timer reads. A trade is a chain of such steps,
   one per partition of its users, joined by legs (app.core.trading): its
   first step reserves the buyer's quote and stores a pending result, without
   an event, that its ``settle`` leg later completes.
6. The checkpoint (app.agents.checkpoint) makes the batch durable, rows first,
   outputs after, and only then is the input acknowledged to Faust, whose
   committer commits only acknowledged offsets.

The firewall. Whatever one message makes the reading, validation or decision
code raise, of any exception class, ends as a dead letter (``processing_failed``,
with the error) and, when the message names its user, a rejected event; the
partition goes on and the cursor moves past the message, so neither the hole
filler nor the progress watch comes back to it. Only the tables and Kafka,
the infrastructure, may raise out of the agent and stop it.

Redelivery. Input not yet acknowledged comes again to whoever owns the partition
next, after a crash, a failed checkpoint or a rebalance. RocksDB never holds
more than the acknowledged changelogs, and a batch's result rows are durable
before its accounts (app.agents.checkpoint), so each redelivered message finds
one of four things:

- its result row and the account's recorded offset at or past it: applied, maybe
  never announced. The stored result and the account are written again and the
  event and credit leg sent again; consumers dedupe by (user_id, op_id).
- its result row beyond the account's recorded offset: the worker died after
  the results were durable and before the accounts were. The message is applied
  again, from the same account, to the same result; its event was never sent.
  The hold rows it wrote are durable too, and read as the holds they replaced
  until the account applies the message (app.core.hold_rows).
- no result row: never applied. Applied now. (If the account's offset is past it
  anyway, Faust handed it over out of order; see ledger.decide.)
- a result row written by another message that the account has not applied: a
  trade's settle leg rewrites the trade's result, so the trade's first step,
  redelivered, can find its result beyond the account. Nothing is done (a
  ``deferred`` line): the settle leg comes back too and applies again.

Concurrency is one: the agent owns every change to its partitions' tables, and
each batch is decided and checkpointed before the next one starts.
"""

from __future__ import annotations

import json
import logging
import traceback
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from faust import Stream
from faust.types import EventT, StreamT
from faust.types.tuples import Message

from app.agents.batch import Batch
from app.agents.checkpoint import Checkpoints
from app.core import trading
from app.core.hold_rows import HoldsLoaded, hold_row_key, load
from app.core.ledger import (
    PROCESSING_FAILED,
    Account,
    Decision,
    Origin,
    Outcome,
    StoredResult,
    apply_credit,
    apply_expiry,
    apply_operation,
    credit_key,
    decide,
    expiry_key,
    hold_key,
    is_parked,
    operation_key,
    reject_invalid,
)
from app.core.legs import Credit, Expiry, Leg, TradeLeg, read_leg
from app.core.models import MAX_TS, Command, Event, Operation, Trade, read_operation
from app.errors import InvalidOperation
from app.faust_app import app
from app.frame import failpoints
from app.frame.faust_internals import set_current_event
from app.guards.input_gaps import cursor_key, read_range
from app.observability import metrics
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts, cursors, expiries, expiry_row, holds, results
from app.topics import CREDITS, DEAD_LETTERS, EVENTS, OPERATIONS, ledger_input

log = logging.getLogger(__name__)

DEAD_LETTER_VALUE_CHARS = 64 * 1024
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_TRACE_CHARS = 4000


@app.agent(ledger_input, name="ubscore")
async def process(stream: StreamT[bytes]) -> None:
    """Apply every operation and credit leg of the partitions this worker owns, checkpointed in batches."""

    async def acknowledge(batch: Batch) -> None:
        for message in batch.filled:
            app.consumer.ack(message)
        for event in batch.events:
            await stream.ack(event)

    checkpoints = Checkpoints(acknowledge, settings.batch_max)
    try:
        # Faust acknowledges nothing on its own: an input counts as done only after its checkpoint.
        # (noack() is Faust's Stream's; StreamT does not declare it.)
        async for event in cast(Stream, stream).noack().events():
            await take(checkpoints, event)
            await checkpoints.added()
    finally:
        await checkpoints.close()


async def take(checkpoints: Checkpoints, event: EventT) -> None:
    """Handle one input event into the open batch, after any records Faust skipped before it.

    Skipped records are read back and handled in chunks of at most a batch
    (``UBS_BATCH_MAX``), each chunk with the cursor past it, so a hole of any size
    is bounded in memory and in read time. The checkpoint may take the open batch
    at any ``await``: each chunk, and then the event, picks the open batch only
    after its last ``await``, so what one chunk decides lands in one batch whose
    checkpoint has not begun.
    """
    message = event.message
    set_current_event(event)  # table reads go to this message's partition
    position = cursor_key(message.topic, message.partition)
    chunks = 0
    while True:
        last = checkpoints.open.get(cursors, message.partition, position)
        if message.offset <= (0 if last is None else last + 1):
            break
        # Nothing applied here (no cursor): all that Kafka holds before the event is due.
        missed = await read_hole(message, None if last is None else last + 1, settings.batch_max, chunks)
        if not missed:
            break
        chunks += 1
        batch = checkpoints.open  # no await until the chunk is in it
        for skipped in missed:
            handle(batch, skipped)
        batch.filled.extend(missed)
        batch.put(cursors, message.partition, position, missed[-1].offset)
        await checkpoints.added()
    batch = checkpoints.open  # no await from here to the end of this function
    handle(batch, message)
    last = batch.get(cursors, message.partition, position)
    if last is None or message.offset > last:
        batch.put(cursors, message.partition, position, message.offset)
    batch.events.append(event)


def handle(batch: Batch, message: Message) -> None:
    """One input record, whichever of the two topics it came from."""
    if message.topic == CREDITS:
        handle_leg(batch, message)
    else:
        handle_operation(batch, message)


async def read_hole(current: Message, start: Optional[int], limit: int, chunks: int) -> List[Message]:
    """Up to ``limit`` of the records Faust skipped before ``current``, read straight from Kafka, in order.

    With ``start`` None nothing was ever applied on the partition, so every record
    Kafka still holds before ``current`` is due; none there (a partition whose
    first records retention removed) is no hole. A hole counts once, at its first
    chunk (``chunks`` read before this one).
    """
    end = current.offset
    missed = await read_range(current.topic, current.partition, start, end, limit)
    if not missed:
        return missed
    first = start if start is not None else missed[0].offset
    if chunks == 0:
        metrics.INPUT_GAPS.inc()
        log.error("input_gap topic=%s partition=%s missing=%s-%s", current.topic, current.partition, first, end - 1)
    log.warning(
        "input_gap_filled topic=%s partition=%s offsets=%s-%s",
        current.topic,
        current.partition,
        first,
        missed[-1].offset,
    )
    return missed


def handle_operation(batch: Batch, message: Message) -> None:
    """Validate, deduplicate and apply one client operation."""
    try:
        intake = read_operation(message.value, settings.max_body_bytes)
        home = partition_for(user_key(intake.user_id), settings.partitions)
    except InvalidOperation as error:
        dead_letter(batch, message, error)
        return
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        dead_letter(batch, message, processing_failed(message, exc))
        return
    if message.partition != home:
        move(batch, message, intake.user_id, intake.op_id, home)
        return

    ts = _timestamp_ms(message)
    invalid = intake.error
    request = intake.operation
    if not 0 < ts <= MAX_TS:
        # The input topics take the broker's time (LogAppendTime); a topic changed behind the
        # worker's back may carry anything a producer chose. No money moves on such a time.
        invalid = InvalidOperation(None, "invalid_timestamp", f"the record's timestamp {ts} is outside 1..{MAX_TS}")
        request = None
        ts = min(max(ts, 1), MAX_TS)

    origin = Origin("operations", message.offset)
    named = _hold_named(request)
    max_assets = settings.max_assets_per_account

    def outcome_for(account: Account) -> Outcome:
        if isinstance(request, Trade):
            return trading.reserve(account, request, ts, max_assets)
        if request is not None:
            used = hold_used(batch, message.partition, request, account, origin, ts)
            return apply_operation(account, request, ts, hold_used=used, max_assets=max_assets)
        assert invalid is not None
        return reject_invalid(account, intake.user_id, intake.op_id, intake.body, invalid.reason, ts)

    def failure_for(account: Account) -> Outcome:
        return reject_invalid(account, intake.user_id, intake.op_id, intake.body, PROCESSING_FAILED, ts)

    key = operation_key(intake.user_id, intake.op_id).encode()
    applied = apply_once(batch, message, key, intake.user_id, origin, ts, outcome_for, failure_for, holds=named)
    if applied and invalid is not None:
        dead_letter(batch, message, invalid)


def _hold_named(request: Optional[Command]) -> Tuple[str, ...]:
    """The hold an operation can change: a lock's, unlock's or transfer's ``hold_id``, a trade's buyer's hold."""
    if isinstance(request, Trade):
        return (request.buyer.hold_id,)
    if request is not None and request.hold_id is not None:
        return (request.hold_id,)
    return ()


def hold_used(
    batch: Batch, partition: int, operation: Operation, account: Account, origin: Origin, now_ms: int
) -> bool:
    """Whether a lock's hold id was used before this one, by a lock the account has applied, within the window.

    The mark is a result row, durable before the account that opens the hold. A
    mark of a lock the account has not applied was left by an attempt whose
    account a kill lost: this very lock's, which applies again; or a later
    lock's, which comes back after this one and is decided again then. Neither
    counts. A mark whose window has passed (``StoredResult.expired``, the same
    rule) frees the id.
    """
    if operation.kind != "lock" or operation.hold_id is None:
        return False
    mark = read_mark(batch, partition, operation.user_id, operation.hold_id)
    if mark is None or mark.origin == origin or not account.has_applied(mark.origin):
        return False
    return not mark.expired(now_ms, settings.results_retention_s * 1000)


def read_mark(batch: Batch, partition: int, user_id: int, hold_id: str) -> Optional[StoredResult]:
    """A hold id's mark, in the shape of a result row without an event (its origin and time)."""
    mark = batch.get(results, partition, hold_key(user_id, hold_id).encode())
    if mark is None:
        return None
    at = mark.get("at")
    return StoredResult(None, Origin.from_json(mark["hold"]), at=None if at is None else int(at))


def handle_leg(batch: Batch, message: Message) -> None:
    """Apply a leg sent to this partition once: a transfer's credit, a hold's expiry, a step of a trade."""
    try:
        leg = read_leg(message.value)
    except InvalidOperation as error:
        refuse_leg(batch, message, error)
        return
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        refuse_leg(batch, message, processing_failed(message, exc))
        return
    origin = Origin("credits", message.offset)
    partition = message.partition
    if isinstance(leg, Credit):
        key = credit_key(leg).encode()
        credit = partial(apply_credit, credit=leg, max_assets=settings.max_assets_per_account)
        apply_once(batch, message, key, leg.payee, origin, leg.ts, credit)
    elif isinstance(leg, Expiry):
        key = expiry_key(leg).encode()
        expire = partial(apply_expiry, expiry=leg)
        apply_once(batch, message, key, leg.user_id, origin, leg.expires_at_ms, expire, holds=(leg.hold_id,))
        hold = load_account(batch, partition, leg.user_id, (leg.hold_id,)).account.holds.get(leg.hold_id)
        if hold is None or hold.expires_at_ms != leg.expires_at_ms:
            batch.put(expiries, partition, expiry_row(leg), None)  # released or closed: due no more
    else:
        handle_trade_step(batch, message, leg, origin)


def refuse_leg(batch: Batch, message: Message, error: InvalidOperation) -> None:
    """A leg that cannot be read: only this agent and its timer write legs, so it is a bug or a forgery.

    Its money may be in flight (a payer debited, a buyer's quote reserved), so it is
    an alarm (``ubscore_legs_refused_total``, UBSCoreLegRefused), never a quiet dead letter.
    """
    metrics.LEGS_REFUSED.inc()
    log.error(
        "leg_refused partition=%s offset=%s reason=%s field=%s",
        message.partition,
        message.offset,
        error.reason,
        error.field,
    )
    dead_letter(batch, message, error)


def handle_trade_step(batch: Batch, message: Message, leg: TradeLeg, origin: Origin) -> None:
    """A trade's sell, settle or fee step on the partition of the user it is for (app.core.trading)."""
    user = leg.recipient
    max_assets = settings.max_assets_per_account
    if leg.step == "sell":
        # A seller's step that raises refuses the trade, so that the buyer's reservation is released.
        refusal = partial(trading.refuse, leg=leg, reason=PROCESSING_FAILED)
        key = trading.sell_key(leg).encode()
        sell = partial(trading.sell, leg=leg, max_assets=max_assets)
        apply_once(batch, message, key, user, origin, leg.ts, sell, refusal, holds=(leg.trade.seller.hold_id,))
    elif leg.step == "settle":
        key = operation_key(user, leg.trade.op_id).encode()  # the trade's result, pending until now
        settle = partial(trading.settle, leg=leg)
        apply_once(batch, message, key, user, origin, leg.ts, settle, settles=True, holds=(leg.trade.buyer.hold_id,))
    else:
        key = trading.fee_key(leg).encode()
        fee = partial(trading.collect_fee, leg=leg, max_assets=max_assets)
        apply_once(batch, message, key, user, origin, leg.ts, fee)


def apply_once(
    batch: Batch,
    message: Message,
    result_key: bytes,
    user_id: int,
    origin: Origin,
    now_ms: int,
    outcome_for: Callable[[Account], Outcome],
    failure_for: Optional[Callable[[Account], Outcome]] = None,
    settles: bool = False,
    holds: Sequence[str] = (),
) -> bool:
    """Apply the message at ``origin`` unless it already was; True when it was applied now.

    ``now_ms`` is the message's decision time, taken from the log (an operation's
    record time; a leg's own time, its operation's): a stored row counts only within
    its window (``StoredResult.expired``). A ``settles`` message gives a pending
    result (a trade's, stored without an event) its final form: the pending row
    does not count as its result. ``holds`` are the ids of the holds the message
    can change, loaded with the account: no other hold can matter to its decision.

    A message decided again after a crash (its own row found beyond the account)
    replaces what its first attempt stored: the new decision's rows, or none
    (``forget_attempt``), so nothing stale answers for a decision not taken again.

    Reading and writing the tables is infrastructure: if that raises, the agent
    stops, as it must. The decision in between depends only on the message and the
    account; if it raises, the message is dead-lettered and, unless it has a stored
    result of an earlier message, answered with what ``failure_for`` gives (a
    rejection that takes the next seq and moves no money; for a trade's sell step,
    the trade refused). A credit leg has no such answer, its payer has paid, nor do
    a trade's settle and fee steps, which follow a delivery: they are only
    dead-lettered.
    """
    partition = message.partition
    loaded = load_account(batch, partition, user_id, holds)
    account = loaded.account
    stored = StoredResult.from_json(batch.get(results, partition, result_key))
    if settles and stored is not None and stored.event is None:
        stored = None
    if stored is not None and stored.expired(now_ms, settings.results_retention_s * 1000):
        stored = None
    decision: Optional[Decision] = None
    try:
        decision = decide(account, stored, origin)
        outcome: Optional[Outcome] = None
        if decision == Decision.DEFER:
            assert stored is not None  # decide() defers only to a stored result
            log_deferred(user_id, result_key, origin, stored)
            return False
        if decision != Decision.RESEND:
            failpoints.hit("raise_in_decision", failpoints.raise_injected)
            outcome = outcome_for(account)
    except Exception as exc:  # noqa: BLE001 - the firewall: no message may stop the partition
        dead_letter(batch, message, processing_failed(message, exc))
        first_attempt = stored is not None and decision == Decision.APPLY
        if first_attempt:
            assert stored is not None
            forget_attempt(batch, partition, result_key, stored)
        # A stored result of an earlier message is the operation's one result: never replaced by a failure.
        if (stored is None or first_attempt) and failure_for is not None:
            answer_failure(batch, message, result_key, user_id, loaded, origin, now_ms, lambda: failure_for(account))
        return False
    if outcome is None:
        assert stored is not None  # decide() resends only what is stored
        resend(batch, partition, result_key, user_id, loaded, stored, origin)
        return False
    if decision == Decision.APPLY and stored is not None:
        forget_attempt(batch, partition, result_key, stored)
    if decision == Decision.APPLY_LATE and outcome.event is not None:
        metrics.APPLIED_LATE.inc()
        log.warning("applied_late user_id=%s stream=%s offset=%s", user_id, origin.stream, origin.offset)
    record(batch, partition, result_key, user_id, loaded, outcome, origin, now_ms)
    return True


def load_account(batch: Batch, partition: int, user_id: int, hold_ids: Sequence[str]) -> HoldsLoaded:
    """A user's account as the batch sees it, with the named holds from their rows (app.core.hold_rows)."""

    def row(hold_id: str) -> Any:
        return batch.get(holds, partition, hold_row_key(user_id, hold_id))

    def fresh(hold_id: str) -> bool:
        return batch.wrote(holds, partition, hold_row_key(user_id, hold_id))

    return load(batch.get(accounts, partition, user_key(user_id)), hold_ids, row, fresh)


def put_account(
    batch: Batch, partition: int, user_id: int, loaded: HoldsLoaded, account: Account, origin: Origin
) -> None:
    """Put a user's account row, marked with ``origin``, and every hold row that must change with it.

    The account row never carries holds: each hold the decision opened, changed
    or closed is a row of its own (a closed one first a row without a hold, which
    the checkpoint deletes once the account is durable), and so is each hold of a
    row written before holds had rows, the first time that account is written.
    """
    batch.put(accounts, partition, user_key(user_id), account.mark(origin).row_json())
    for hold_id, hold_row in loaded.rows_after(account, origin):
        batch.put(holds, partition, hold_row_key(user_id, hold_id), None if hold_row is None else hold_row.to_json())
    if loaded.carried:
        log.info("holds_moved user_id=%s holds=%s partition=%s", user_id, len(loaded.account.holds), partition)


def log_deferred(user_id: int, result_key: bytes, origin: Origin, stored: StoredResult) -> None:
    """One line for a message left for its stored result's own message to settle (ledger.decide)."""
    log.warning(
        "deferred user_id=%s result_key=%s stream=%s offset=%s result_stream=%s result_offset=%s",
        user_id,
        result_key.decode(errors="replace"),
        origin.stream,
        origin.offset,
        stored.origin.stream,
        stored.origin.offset,
    )


def forget_attempt(batch: Batch, partition: int, result_key: bytes, first: StoredResult) -> None:
    """Drop the rows a first attempt of this message stored, whose account a crash lost.

    The message is being decided again, and only what that decision stores may
    stay: its result row, and the hold mark of a lock it accepted (a lock refused
    now must not leave its id marked). An expiries row of such a hold needs no
    undoing: the leg it sends finds no hold and removes it.
    """
    batch.put(results, partition, result_key, None)
    event = first.event
    if event is None or event.kind != "lock" or not event.accepted or event.hold_id is None:
        return
    mark = read_mark(batch, partition, event.user_id, event.hold_id)
    if mark is not None and mark.origin == first.origin:
        batch.put(results, partition, hold_key(event.user_id, event.hold_id).encode(), None)


def answer_failure(
    batch: Batch,
    message: Message,
    result_key: bytes,
    user_id: int,
    loaded: HoldsLoaded,
    origin: Origin,
    now_ms: int,
    rejection: Callable[[], Outcome],
) -> None:
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
    record(batch, message.partition, result_key, user_id, loaded, outcome, origin, now_ms)


def record(
    batch: Batch,
    partition: int,
    result_key: bytes,
    user_id: int,
    loaded: HoldsLoaded,
    outcome: Outcome,
    origin: Origin,
    now_ms: int,
) -> None:
    """Put the result row, the account and its changed hold rows, then queue the event and the legs.

    A message that decided nothing (an expiry with nothing to release yet) stores
    no result and leaves the account as it was, its offset unrecorded: applied
    again, it decides again, as a message not applied yet (a late application
    would stamp its hold rows with an input the old account already counts as
    applied: app.core.hold_rows), and a later copy can still act.
    """
    event = outcome.event
    if event is None and not outcome.legs and outcome.account == loaded.account:
        return
    if event is not None or outcome.legs:
        batch.put(results, partition, result_key, StoredResult(event, origin, outcome.legs, now_ms).to_json())
    put_account(batch, partition, user_id, loaded, outcome.account, origin)
    send_all(batch, event, outcome.legs)
    if event is None:
        return
    put_hold_rows(batch, partition, event, outcome.account, origin, now_ms)
    if is_parked(event):
        metrics.CREDITS_PARKED.inc()
        log.error(
            "credit_parked user_id=%s op_id=%s kind=%s amount=%s counterparty=%s partition=%s offset=%s",
            event.user_id,
            event.op_id,
            event.kind,
            event.amount,
            event.counterparty,
            partition,
            origin.offset,
        )
    metrics.count_operation(event.kind, event.status)
    log.info(
        "event user_id=%s op_id=%s kind=%s status=%s reason=%s seq=%s asset=%s amount=%s available=%s locked=%s"
        " hold_id=%s partition=%s stream=%s offset=%s",
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
        event.hold_id,
        partition,
        origin.stream,
        origin.offset,
    )


def resend(
    batch: Batch,
    partition: int,
    result_key: bytes,
    user_id: int,
    loaded: HoldsLoaded,
    stored: StoredResult,
    origin: Origin,
) -> None:
    """Answer a redelivered or retried message with its first result, and re-send all it caused."""
    stored_event = stored.event
    batch.put(results, partition, result_key, stored.to_json())
    put_account(batch, partition, user_id, loaded, loaded.account, origin)
    send_all(batch, stored_event, stored.legs)
    if stored_event is not None:
        put_hold_rows(batch, partition, stored_event, loaded.account, stored.origin, stored.at)
    metrics.DUPLICATES.inc()
    log.info(
        "duplicate user_id=%s result_key=%s kind=%s seq=%s partition=%s stream=%s offset=%s resent=true",
        user_id,
        result_key.decode(errors="replace"),
        None if stored_event is None else stored_event.kind,
        None if stored_event is None else stored_event.seq,
        partition,
        origin.stream,
        origin.offset,
    )


def put_hold_rows(
    batch: Batch, partition: int, event: Event, account: Account, origin: Origin, at: Optional[int]
) -> None:
    """For a lock that opened a hold: mark its id used, and list it as due while it is open and expires.

    Written again with every resend, so that rows a failed checkpoint lost come back
    with the redelivery that finds the lock applied; the mark keeps the lock's own
    time, so a resend never extends its window.
    """
    if event.kind != "lock" or event.hold_id is None or not event.accepted:
        return
    mark: Dict[str, Any] = {"hold": origin.to_json()}
    if at is not None:
        mark["at"] = at
    batch.put(results, partition, hold_key(event.user_id, event.hold_id).encode(), mark)
    hold = account.holds.get(event.hold_id)
    if hold is not None and hold.expires_at_ms is not None:
        due = Expiry(event.user_id, event.hold_id, hold.expires_at_ms)
        batch.put(expiries, partition, expiry_row(due), due.to_json())


def send_all(batch: Batch, event: Optional[Event], legs: Sequence[Leg]) -> None:
    """Queue a message's event (if any) and its legs."""
    if event is not None:
        send_event(batch, event)
    for leg in legs:
        send_leg(batch, leg)


def send_event(batch: Batch, event: Event) -> None:
    """Publish one result on balance.events, keyed by its user."""
    batch.send(EVENTS, user_key(event.user_id), _encode(event.to_json()))


def send_leg(batch: Batch, leg: Leg) -> None:
    """Send a leg to the partition of the user it is for."""
    batch.send(CREDITS, user_key(leg.recipient), _encode(leg.to_json()))


def move(batch: Batch, message: Message, user_id: int, op_id: str, home: int) -> None:
    """Re-send an operation to the partition that owns its user, by number, under the user's key.

    The number is explicit so that no partitioner, ours or a client's, can send it
    astray again. A crash before the input commit sends a second copy; it is
    deduplicated by op_id like any client retry.
    """
    batch.send(OPERATIONS, user_key(user_id), message.value or b"", partition=home)
    metrics.REROUTED.inc()
    log.info(
        "rerouted user_id=%s op_id=%s from_partition=%s to_partition=%s offset=%s key=%r",
        user_id,
        op_id,
        message.partition,
        home,
        message.offset,
        _clip(message.key, DEAD_LETTER_KEY_BYTES),
    )


def dead_letter(batch: Batch, message: Message, error: InvalidOperation) -> None:
    """Park a message that cannot be processed, with its error and origin, and move on.

    The letter is bounded whatever the input (value and key are cut), so it always
    fits in a Kafka message; it is keyed like the input unless that key is too long,
    and then sits on the input's partition number.
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
    batch.send(DEAD_LETTERS, short_key, _encode(letter), partition=None if short_key is not None else message.partition)
    metrics.DEAD_LETTERS.labels(reason=error.reason).inc()
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
    metrics.PROCESSING_FAILURES.inc()
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
