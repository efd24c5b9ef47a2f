"""Failpoints (app.frame.failpoints): the spec a fault-injection run arms, and when an armed point fires.

A wrong spec must stop the worker at start, not arm nothing and let a crash test
pass without its crash; an armed action must run at exactly the Nth pass, once,
or the fault a test injects lands somewhere else. The SIGKILL path is never taken
here: ``os.kill`` is replaced by a trap that fails the test instead.
"""

from __future__ import annotations

from functools import partial
from typing import Any, List, Optional

import pytest

from app.frame import failpoints
from app.frame.failpoints import POINTS, InjectedFailure, parse, raise_injected


@pytest.fixture(autouse=True)
def no_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test arms, the test process survives: a kill attempt fails the test."""

    def trap(*args: Any) -> None:
        raise AssertionError(f"failpoint tried to kill the test process: os.kill{args}")

    monkeypatch.setattr(failpoints.os, "kill", trap)


def arm(monkeypatch: pytest.MonkeyPatch, spec: Optional[str]) -> None:
    monkeypatch.setattr(failpoints, "_armed", parse(spec))
    monkeypatch.setattr(failpoints, "_passes", 0)


@pytest.mark.parametrize("name", POINTS)
def test_every_point_parses_with_its_count(name: str) -> None:
    assert parse(f"{name}:1") == (name, 1)
    assert parse(f"{name}:120") == (name, 120)


def test_the_decision_failure_point_is_known() -> None:
    assert parse("raise_in_decision:3") == ("raise_in_decision", 3)


@pytest.mark.parametrize("spec", [None, ""])
def test_unset_arms_nothing(spec: Optional[str]) -> None:
    assert parse(spec) is None


@pytest.mark.parametrize(
    "spec",
    [
        "after_send",  # no count
        "after_send:",
        "after_send:0",
        "after_send:-1",
        "after_send:x",
        "after_send:1.5",
        "after_send:+2",
        "after_sends:1",  # a misspelt name
        "AFTER_SEND:1",
        ":3",
        "raise_in_decisions:1",
    ],
)
def test_a_bad_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="UBS_FAILPOINT"):
        parse(spec)


def test_an_armed_action_runs_once_at_the_nth_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    arm(monkeypatch, "raise_in_decision:3")
    ran_at: List[int] = []
    for number in range(1, 8):
        failpoints.hit("raise_in_decision", partial(ran_at.append, number))
    assert ran_at == [3]


def test_the_first_pass_can_be_the_armed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    arm(monkeypatch, "stall_input:1")
    ran: List[str] = []
    for _ in range(3):
        failpoints.hit("stall_input", lambda: ran.append("stall"))
    assert ran == ["stall"]


def test_passes_of_other_points_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    arm(monkeypatch, "raise_in_decision:2")
    ran: List[str] = []
    for _ in range(5):
        failpoints.hit("after_send", lambda: ran.append("wrong point"))
        failpoints.hit("before_commit")  # not armed: returns, no kill
    failpoints.hit("raise_in_decision", lambda: ran.append("first"))
    failpoints.hit("raise_in_decision", lambda: ran.append("second"))
    assert ran == ["second"]


def test_nothing_fires_when_nothing_is_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    arm(monkeypatch, None)
    ran: List[str] = []
    for name in POINTS:
        failpoints.hit(name, partial(ran.append, name))
        failpoints.hit(name)
    assert ran == []
    assert (failpoints.armed(), failpoints.armed_point()) == (False, None)


def test_the_armed_point_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    arm(monkeypatch, "after_produce:4")
    assert (failpoints.armed(), failpoints.armed_point()) == (True, "after_produce")


def test_the_injected_failure_is_an_error_no_handler_names() -> None:
    with pytest.raises(InjectedFailure):
        raise_injected()
    assert not issubclass(InjectedFailure, (ValueError, KeyError, LookupError, OSError))
