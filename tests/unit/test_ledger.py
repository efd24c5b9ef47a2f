"""The pure ledger core: every kind, every rejection, seq, idempotency rule, big integers."""

from __future__ import annotations

from typing import Any

from app.core.ledger import (
    MAX_BALANCE,
    Account,
    Balance,
    Decision,
    Origin,
    StoredResult,
    apply_credit,
    apply_operation,
    credit_key,
    decide,
    operation_key,
    reject_invalid,
)
from app.core.legs import Credit
from app.core.models import Event, Operation

TS = 1_700_000_000_000


def at_op(offset: int) -> Origin:
    """The origin of a message at ``offset`` of the operations stream."""
    return Origin("operations", offset)


def op(kind: str, amount: int, op_id: str = "op", asset: int = 1, **extra: Any) -> Operation:
    return Operation(op_id=op_id, kind=kind, user_id=7, asset=asset, amount=amount, **extra)


def funded(available: int = 100, locked: int = 0, seq: int = 3) -> Account:
    return Account(seq=seq, balances={1: Balance(available, locked)})


def test_deposit_into_new_account() -> None:
    outcome = apply_operation(Account(), op("deposit", 250), TS)
    assert outcome.account == Account(seq=1, balances={1: Balance(250, 0)})
    assert outcome.event == Event(
        op_id="op",
        kind="deposit",
        user_id=7,
        asset=1,
        amount=250,
        status="accepted",
        reason=None,
        available=250,
        locked=0,
        seq=1,
        ts=TS,
        counterparty=None,
    )
    assert outcome.legs == ()


def test_withdraw_accepted_within_funds() -> None:
    outcome = apply_operation(funded(100), op("withdraw", 100), TS)
    assert outcome.account.balance(1) == Balance(0, 0)
    assert (outcome.event.status, outcome.event.seq) == ("accepted", 4)


def test_withdraw_rejected_when_funds_insufficient() -> None:
    account = funded(100)
    outcome = apply_operation(account, op("withdraw", 101), TS)
    assert outcome.account == Account(seq=4, balances=account.balances)
    assert (outcome.event.status, outcome.event.reason) == ("rejected", "insufficient_funds")
    assert (outcome.event.available, outcome.event.locked, outcome.event.seq) == (100, 0, 4)


def test_lock_moves_available_to_locked() -> None:
    assert apply_operation(funded(100), op("lock", 40), TS).account.balance(1) == Balance(60, 40)


def test_lock_rejected_beyond_available() -> None:
    assert apply_operation(funded(100, 50), op("lock", 101), TS).event.reason == "insufficient_funds"


def test_unlock_moves_locked_to_available() -> None:
    assert apply_operation(funded(10, 40), op("unlock", 40), TS).account.balance(1) == Balance(50, 0)


def test_unlock_rejected_beyond_locked() -> None:
    assert apply_operation(funded(100, 5), op("unlock", 6), TS).event.reason == "insufficient_funds"


def test_transfer_from_available_debits_payer_and_emits_credit() -> None:
    outcome = apply_operation(funded(100), op("transfer", 30, to_user_id=9), TS)
    assert outcome.account.balance(1) == Balance(70, 0)
    assert (outcome.event.kind, outcome.event.counterparty, outcome.event.status) == ("transfer_out", 9, "accepted")
    assert outcome.legs == (Credit(payer=7, payee=9, op_id="op", asset=1, amount=30, ts=TS),)


def test_transfer_from_locked_settles_a_trade() -> None:
    outcome = apply_operation(funded(5, 30), op("transfer", 30, to_user_id=9, source="locked"), TS)
    assert outcome.account.balance(1) == Balance(5, 0)
    assert len(outcome.legs) == 1


def test_transfer_rejected_sends_no_credit() -> None:
    outcome = apply_operation(funded(100, 0), op("transfer", 1, to_user_id=9, source="locked"), TS)
    assert (outcome.event.reason, outcome.legs) == ("insufficient_funds", ())
    assert outcome.event.kind == "transfer_out"


def test_credit_lands_on_payee_as_transfer_in() -> None:
    credit = Credit(payer=7, payee=9, op_id="op", asset=2, amount=30, ts=TS)
    outcome = apply_credit(Account(), credit)
    assert outcome.account == Account(seq=1, balances={2: Balance(30, 0)})
    assert (outcome.event.kind, outcome.event.user_id, outcome.event.counterparty) == ("transfer_in", 9, 7)


def test_assets_are_independent() -> None:
    account = apply_operation(funded(100), op("deposit", 5, asset=2), TS).account
    assert account.balances == {1: Balance(100, 0), 2: Balance(5, 0)}
    assert apply_operation(account, op("withdraw", 6, asset=2), TS).event.reason == "insufficient_funds"


def test_seq_counts_every_result_without_gaps() -> None:
    account = Account()
    seqs = []
    for i, (kind, amount) in enumerate([("deposit", 10), ("withdraw", 50), ("lock", 5), ("unlock", 9)]):
        outcome = apply_operation(account, op(kind, amount, op_id=f"o{i}"), TS)
        account = outcome.account
        seqs.append(outcome.event.seq)
    assert seqs == [1, 2, 3, 4]


def test_a_balance_stops_at_max_balance_and_a_deposit_past_it_is_rejected() -> None:
    account = apply_operation(Account(), op("deposit", MAX_BALANCE - 1, op_id="d0"), TS).account
    account = apply_operation(account, op("lock", 5, op_id="l0"), TS).account
    outcome = apply_operation(account, op("deposit", 2, op_id="d1"), TS)
    assert (outcome.event.status, outcome.event.reason, outcome.event.seq) == ("rejected", "balance_overflow", 3)
    assert outcome.account.balance(1) == account.balance(1)
    account = apply_operation(account, op("deposit", 1, op_id="d2"), TS).account
    assert account.balance(1) == Balance(MAX_BALANCE - 5, 5)
    assert Account.from_json(account.to_json()) == account


def test_a_credit_past_max_balance_goes_back_to_its_payer() -> None:
    payee = apply_operation(Account(), op("deposit", MAX_BALANCE, op_id="d0"), TS).account
    credit = Credit(7, 8, "t1", 1, 10, TS)
    refused = apply_credit(payee, credit)
    assert (refused.event.kind, refused.event.status, refused.event.reason) == (
        "transfer_in",
        "rejected",
        "balance_overflow",
    )
    assert refused.account.balance(1) == payee.balance(1) and refused.account.seq == 2
    (back,) = refused.legs
    assert back == Credit(8, 7, "t1", 1, 10, TS, returned=True)
    assert credit_key(back) == "7|ret|8|t1" != credit_key(Credit(8, 7, "t1", 1, 10, TS))
    landed = apply_credit(Account(), back)
    assert (landed.event.kind, landed.event.status, landed.event.counterparty) == ("transfer_returned", "accepted", 8)
    assert landed.account.balance(1) == Balance(10, 0)
    full = apply_operation(Account(), op("deposit", MAX_BALANCE, op_id="d1"), TS).account
    parked = apply_credit(full, back)  # the payer filled up meanwhile: parked, never bounced again
    assert (parked.event.status, parked.event.reason, parked.legs) == ("rejected", "balance_overflow", ())


def test_reject_invalid_takes_a_seq_and_reports_nulls() -> None:
    outcome = reject_invalid(
        funded(100), 7, "bad", {"kind": "withdraw", "asset": 1, "amount": 1.5}, "invalid_amount", TS
    )
    event = outcome.event
    assert (event.status, event.reason, event.seq, event.amount, event.available) == (
        "rejected",
        "invalid_amount",
        4,
        None,
        100,
    )
    assert outcome.account.balances == funded(100).balances


def test_reject_invalid_unknown_kind() -> None:
    event = reject_invalid(Account(), 7, "bad", {"kind": "mint", "asset": "x"}, "unknown_kind", TS).event
    assert (event.kind, event.asset, event.available) == ("unknown", None, None)


def test_redelivery_of_an_applied_message_is_resent() -> None:
    outcome = apply_operation(funded(100), op("withdraw", 10), TS)
    account = outcome.account.mark(at_op(41))
    stored = StoredResult(outcome.event, at_op(41))
    assert decide(account, stored, at_op(41)) == Decision.RESEND
    # an older message of the same stream is also behind the account's offset
    assert decide(account, StoredResult(outcome.event, at_op(12)), at_op(12)) == Decision.RESEND


def test_client_retry_from_another_message_is_resent() -> None:
    outcome = apply_operation(funded(100), op("withdraw", 10), TS)
    account = outcome.account.mark(at_op(41))
    assert decide(account, StoredResult(outcome.event, at_op(41)), at_op(90)) == Decision.RESEND


def test_new_message_without_result_is_applied() -> None:
    assert decide(funded(100).mark(at_op(3)), None, at_op(4)) == Decision.APPLY


def test_result_of_this_message_beyond_account_offset_is_applied_again() -> None:
    """Killed after the result write, before the account write (or account rolled back)."""
    outcome = apply_operation(funded(100), op("withdraw", 10), TS)
    account = funded(100).mark(at_op(40))
    assert decide(account, StoredResult(outcome.event, at_op(41)), at_op(41)) == Decision.APPLY


def test_other_stream_taking_the_seq_does_not_fake_an_application() -> None:
    """The crash case a seq comparison gets wrong: after a rollback a credit leg takes the seq
    that a lost operation had, and the operation must still be applied."""
    before = funded(100, seq=5).mark(at_op(40)).mark(Origin("credits", 7))
    lost = apply_operation(before, op("withdraw", 10, op_id="op-100"), TS)  # seq 6, never published
    credit = Credit(payer=9, payee=7, op_id="c", asset=1, amount=5, ts=TS)
    replayed = apply_credit(before, credit).account.mark(Origin("credits", 8))  # now seq 6 too
    assert replayed.seq == lost.event.seq
    assert decide(replayed, StoredResult(lost.event, at_op(41)), at_op(41)) == Decision.APPLY


def test_message_behind_account_offset_without_result_is_applied_late() -> None:
    """Faust may deliver a record fetched before a rebalance's seek ahead of earlier ones."""
    assert decide(funded(100).mark(at_op(257)), None, at_op(251)) == Decision.APPLY_LATE


def test_mark_never_moves_an_offset_back() -> None:
    account = Account().mark(at_op(10)).mark(at_op(4))
    assert account.applied == {"operations": 10}


def test_stored_result_round_trip() -> None:
    stored = StoredResult(apply_operation(Account(), op("deposit", 1), TS).event, Origin("credits", 3))
    assert StoredResult.from_json(stored.to_json()) == stored
    assert StoredResult.from_json(None) is None


def test_replaying_on_same_state_gives_identical_event() -> None:
    first = apply_operation(funded(100), op("transfer", 10, to_user_id=9), TS)
    again = apply_operation(funded(100), op("transfer", 10, to_user_id=9), TS)
    assert first == again


def test_result_keys_cannot_collide() -> None:
    credit = Credit(payer=1, payee=2, op_id="x", asset=1, amount=1, ts=TS)
    assert operation_key(2, "in|1|x") != credit_key(credit)
    assert operation_key(21, "op") != operation_key(2, "1|op|op")


def test_account_json_round_trip() -> None:
    account = Account(seq=9, balances={3: Balance(1, 2), 1: Balance(0, 5)})
    assert account.balances_json() == {"1": {"available": 0, "locked": 5}, "3": {"available": 1, "locked": 2}}
    marked = account.mark(at_op(8))
    assert Account.from_json(marked.to_json()).applied == {"operations": 8}
    assert Account.from_json(marked.to_json()) == account  # bookkeeping is not part of equality
    assert Account.from_json(None) == Account()


def test_applying_keeps_the_recorded_offsets() -> None:
    account = funded(100).mark(at_op(5)).mark(Origin("credits", 2))
    after_op = apply_operation(account, op("withdraw", 1), TS).account
    after_credit = apply_credit(after_op, Credit(payer=9, payee=7, op_id="c", asset=1, amount=1, ts=TS)).account
    rejected = apply_operation(after_credit, op("withdraw", 10**9), TS).account
    assert after_op.applied == after_credit.applied == rejected.applied == {"operations": 5, "credits": 2}


def test_a_result_the_account_has_not_applied_is_not_resent_for_another_message() -> None:
    """A trade's settle leg (credits) rewrites the trade's result. Killed after that result write and before the
    account write, the trade's first step (operations) may come back before the settle leg: its stored result
    reports balances no account holds, so it waits for the settle leg, which applies again."""
    pending = funded(100).mark(at_op(41))  # the trade's first step is in the account
    outcome = apply_operation(pending, op("withdraw", 10), TS)
    settled = StoredResult(outcome.event, Origin("credits", 207))
    assert decide(pending, settled, at_op(41)) == Decision.DEFER  # the first step, redelivered
    assert decide(pending, settled, at_op(90)) == Decision.DEFER  # a client retry meanwhile
    assert decide(pending, settled, Origin("credits", 207)) == Decision.APPLY  # the settle leg itself
    applied = pending.mark(Origin("credits", 207))
    assert decide(applied, settled, at_op(41)) == Decision.RESEND  # once the account has it
    assert decide(applied, settled, at_op(90)) == Decision.RESEND


def test_an_account_has_applied_what_its_stream_offsets_cover() -> None:
    account = funded(100).mark(at_op(41)).mark(Origin("credits", 7))
    assert account.has_applied(at_op(41)) and account.has_applied(at_op(3))
    assert not account.has_applied(at_op(42))
    assert account.has_applied(Origin("credits", 7)) and not account.has_applied(Origin("credits", 8))
    assert not funded(100).has_applied(at_op(0))
