"""The gateway's fast 503s (app.web.admission): the bound on waiting requests, and how long a backlog will take."""

from __future__ import annotations

import pytest

from app.web.admission import PROBE_S, Slots, backlog_s, records_before


def test_the_backlog_is_the_records_ahead_at_the_rate_seen() -> None:
    assert backlog_s(records=3000, done=500, elapsed_s=1.0) == pytest.approx(6.0)


@pytest.mark.parametrize(
    "records, done, elapsed_s",
    [
        (0, 500, 1.0),  # nothing ahead: the result is about to come
        (3000, 0, 1.0),  # no progress seen: no rate, no verdict (the wait runs into its timeout)
        (3000, 500, PROBE_S / 4),  # too short a look to judge
    ],
)
def test_no_estimate_without_a_backlog_a_rate_or_a_long_enough_look(records: int, done: int, elapsed_s: float) -> None:
    assert backlog_s(records, done, elapsed_s) is None


def test_each_other_backlog_is_served_about_as_much_as_the_operations_own_partition() -> None:
    # 400 ahead on its own partition; the others give 400, their whole 150, nothing, and 400.
    assert records_before(400, [1000, 150, 0, 5000]) == 400 + 400 + 150 + 0 + 400


def test_an_applied_operation_has_nothing_before_it_whatever_the_other_backlogs() -> None:
    assert records_before(0, [1000, 2000]) == 0
    assert records_before(-3, [1000]) == 0


def test_a_cursor_past_a_stale_end_counts_as_no_backlog() -> None:
    # The end comes from the last fetch and may lag the cursor; that is not a negative backlog.
    assert records_before(10, [-5]) == 10


def test_slots_turn_away_the_holder_past_the_limit_and_free_on_any_exit() -> None:
    slots = Slots(2)
    with slots.take() as first, slots.take() as second:
        with slots.take() as third:
            assert (first, second, third) == (True, True, False)
            assert slots.held == 2  # the one turned away holds nothing
        assert slots.held == 2
    assert slots.held == 0
    with pytest.raises(RuntimeError), slots.take():
        raise RuntimeError("a wait that failed")
    with slots.take() as again:
        assert again and slots.held == 1
    assert slots.held == 0
