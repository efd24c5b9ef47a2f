"""The ownership deadline (app.frame.ownership): the rule, the heartbeat record, its lines, its setting."""

from __future__ import annotations

import logging
from typing import Any, List

import pytest
from aiokafka import errors as kafka_errors

from app.errors import ConfigurationError
from app.frame import ownership
from app.frame.ownership import Ownership, confirmed, recording
from app.observability import metrics
from app.settings import load

# ruff: noqa: SLF001 - a stand-in for aiokafka's coordinator, whose private heartbeat the guard wraps


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_confirmed_up_to_the_bound_and_never_without_a_word() -> None:
    assert confirmed(10.0, 10.0, 15.0)
    assert confirmed(10.0, 25.0, 15.0)  # exactly at the bound: still vouched for
    assert not confirmed(10.0, 25.001, 15.0)
    assert not confirmed(None, 10.0, 15.0)


def test_a_worker_vouches_until_the_bound_passes_and_again_once_heard() -> None:
    clock = Clock()
    tracker = Ownership(15.0, clock)
    assert not tracker.vouches() and not tracker.partitioned()  # no assignment yet: nothing to vouch for
    assert tracker.silence_s() is None and tracker.vouched_for_s() == 0.0
    tracker.heard()
    clock.now += 10
    assert tracker.vouches() and tracker.silence_s() == 10.0 and tracker.vouched_for_s() == 5.0
    clock.now += 5.5
    assert not tracker.vouches() and tracker.partitioned() and tracker.vouched_for_s() == 0.0
    tracker.heard()
    assert tracker.vouches() and not tracker.partitioned()


def test_one_line_when_it_stops_vouching_and_one_when_it_vouches_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tracker = Ownership(15.0, clock)
    tracker.heard()
    with caplog.at_level(logging.INFO, logger="app.frame.ownership"):
        tracker.vouches()  # the first verdict, vouching: a worker that just joined says nothing
        clock.now += 16
        for _ in range(5):
            tracker.vouches()
        tracker.heard()
        for _ in range(5):
            tracker.vouches()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "ownership_unconfirmed silence_s=16.0 bound_s=15.0 action=refuse_reads",
        "ownership_confirmed silence_s=0.0 bound_s=15.0",
    ]


def test_the_gauge_counts_from_the_start_then_from_the_last_word(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    tracker = Ownership(15.0, clock)
    monkeypatch.setattr(ownership, "tracker", tracker)
    clock.now += 7
    assert metrics.value("ubscore_coordinator_silence_seconds") == 7.0
    tracker.heard()
    clock.now += 2
    assert metrics.value("ubscore_coordinator_silence_seconds") == 2.0


class FakeCoordinator:
    """aiokafka's coordinator as the heartbeat routine calls it: each beat answers the next scripted outcome."""

    def __init__(self, clock: Clock, outcomes: List[Any], takes_s: float = 0.5) -> None:
        self.clock, self.outcomes, self.takes_s = clock, outcomes, takes_s

    async def _do_heartbeat(self) -> bool:
        self.clock.now += self.takes_s  # the round trip
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return bool(outcome)


async def test_the_wrapper_records_answered_heartbeats_at_their_sending_time_and_nothing_else() -> None:
    clock = Clock()
    tracker = Ownership(15.0, clock)
    coordinator = FakeCoordinator(clock, [True, False, kafka_errors.GroupAuthorizationFailedError("g"), True])
    beat = recording(coordinator._do_heartbeat, tracker)
    assert await beat() is True
    assert tracker.last_heard == 100.0  # sent at 100, answered at 100.5: the broker had it no earlier than 100
    clock.now = 110.0
    assert await beat() is False  # a failed request or an error answer
    assert tracker.last_heard == 100.0
    with pytest.raises(kafka_errors.GroupAuthorizationFailedError):
        await beat()
    assert tracker.last_heard == 100.0
    clock.now = 120.0
    assert await beat() is True  # aiokafka answers True to REBALANCE_IN_PROGRESS too: the coordinator spoke
    assert tracker.last_heard == 120.0


async def test_an_assignment_counts_as_word_from_the_coordinator_and_wraps_its_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    tracker = Ownership(15.0, clock)
    monkeypatch.setattr(ownership, "tracker", tracker)
    coordinator = FakeCoordinator(clock, [True])
    monkeypatch.setattr(ownership, "listener_coordinator", lambda listener: coordinator)
    assigned: List[Any] = []

    async def fausts(self: Any, partitions: Any) -> None:
        assigned.append(partitions)

    monkeypatch.setattr(ownership.ConsumerRebalanceListener, "on_partitions_assigned", fausts)
    listener = ownership.OwnershipListener.__new__(ownership.OwnershipListener)
    await listener.on_partitions_assigned({"tp"})
    assert assigned == [{"tp"}] and tracker.last_heard == 100.0
    clock.now = 140.0
    assert not tracker.vouches()
    assert await coordinator._do_heartbeat() is True  # now the wrapper
    assert tracker.last_heard == 140.0 and tracker.vouches()


def test_the_bound_is_half_the_session_timeout_unless_set() -> None:
    assert load({}).ownership_bound_s == 15.0
    assert load({"UBS_SESSION_TIMEOUT_S": "10"}).ownership_bound_s == 5.0
    assert load({"UBS_SESSION_TIMEOUT_S": "10", "UBS_OWNERSHIP_BOUND_S": "8.5"}).ownership_bound_s == 8.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UBS_OWNERSHIP_BOUND_S": "30"}, "UBS_OWNERSHIP_BOUND_S must be below UBS_SESSION_TIMEOUT_S (30), got 30"),
        ({"UBS_SESSION_TIMEOUT_S": "10", "UBS_OWNERSHIP_BOUND_S": "12"}, "below UBS_SESSION_TIMEOUT_S (10), got 12"),
        ({"UBS_OWNERSHIP_BOUND_S": "0"}, "UBS_OWNERSHIP_BOUND_S must be positive"),
        ({"UBS_OWNERSHIP_BOUND_S": "soon"}, "UBS_OWNERSHIP_BOUND_S must be a number"),
    ],
)
def test_a_bound_at_or_past_the_session_timeout_is_refused(env: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(env)
