"""The balance limit through the agent: a deposit past it is refused; a credit past it goes back to its payer."""

from __future__ import annotations

from app.core.ledger import MAX_BALANCE, Account, Balance
from app.core.legs import Credit
from app.observability import metrics
from app.partitioning import user_key
from app.tables import accounts

from .conftest import Ledger, Sent

TS_MS = 1_700_000_000_000


def account(user_id: int) -> Account:
    return Account.from_json(accounts.get(user_key(user_id)))


async def test_a_deposit_past_the_limit_is_rejected(ledger: Ledger, sent: Sent) -> None:
    await ledger.submit(op_id="d1", kind="deposit", user_id=11, asset=1, amount=MAX_BALANCE)
    await ledger.submit(op_id="d2", kind="deposit", user_id=11, asset=1, amount=1)
    event = sent.values("events")[-1]
    assert (event["status"], event["reason"], event["available"]) == ("rejected", "balance_overflow", MAX_BALANCE)


async def test_a_credit_past_the_limit_is_returned_and_a_return_that_cannot_land_is_parked(
    ledger: Ledger, sent: Sent
) -> None:
    await ledger.submit(op_id="d1", kind="deposit", user_id=11, asset=1, amount=MAX_BALANCE)
    credit = Credit(12, 11, "t1", 1, 5, TS_MS)
    await ledger.credit(credit.to_json())
    refused = sent.values("events")[-1]
    assert (refused["kind"], refused["status"], refused["reason"]) == ("transfer_in", "rejected", "balance_overflow")
    (back,) = sent.values("credits")
    assert back == {**credit.returned_to_payer().to_json(), "returned": True}
    assert sent.keys("credits") == [user_key(12)]
    assert account(11).balance(1) == Balance(MAX_BALANCE, 0)
    parked = metrics.value("ubscore_credits_parked_total")
    await ledger.credit(Credit(13, 11, "t2", 1, 5, TS_MS, returned=True).to_json())  # a return to a full payer
    event = sent.values("events")[-1]
    assert (event["kind"], event["status"], event["reason"]) == ("transfer_returned", "rejected", "balance_overflow")
    assert metrics.value("ubscore_credits_parked_total") == parked + 1
