"""The gateway's estimate of how long the backlog ahead of an operation will take (app.web.views)."""

from __future__ import annotations

import pytest

from app.web.views import ADMISSION_PROBE_S, _backlog_s


def test_the_backlog_is_the_records_ahead_at_the_rate_seen() -> None:
    assert _backlog_s(ahead=3000, done=500, elapsed_s=1.0) == pytest.approx(6.0)


@pytest.mark.parametrize(
    "ahead, done, elapsed_s",
    [
        (0, 500, 1.0),  # nothing ahead: the result is about to come
        (3000, 0, 1.0),  # no progress seen: no rate, no verdict (the wait runs into its timeout)
        (3000, 500, ADMISSION_PROBE_S / 4),  # too short a look to judge
    ],
)
def test_no_estimate_without_a_backlog_a_rate_or_a_long_enough_look(ahead: int, done: int, elapsed_s: float) -> None:
    assert _backlog_s(ahead, done, elapsed_s) is None
