"""The simulator in the normal suite: a short fixed range of seeds holds every invariant, a seed replays
exactly, and the checks are not vacuous (a ledger that forgets what it applied is caught)."""

from __future__ import annotations

import pytest

from app.agents import ubscore
from app.core.ledger import Decision
from tests.simulator.__main__ import report
from tests.simulator.simulation import simulate

#: About two seconds on one core; `make simulate` runs thousands.
SEEDS = range(1, 61)
SIZE = 40


def test_seeds_hold_every_invariant() -> None:
    failed = [outcome for outcome in (simulate(seed, SIZE) for seed in SEEDS) if not outcome.ok]
    assert not failed, "\n".join(report(outcome, f"--size {SIZE}") for outcome in failed)


def test_a_seed_replays_exactly() -> None:
    first = simulate(7, SIZE, verbose=True)
    again = simulate(7, SIZE, verbose=True)
    assert len(first.lines) > 200  # it did something: deliveries, checkpoints, kills
    assert first.stats.kills and first.stats.redelivered
    assert first.lines == again.lines
    assert first.digest == again.digest
    assert dict(first.violations.counts) == dict(again.violations.counts)


def test_a_ledger_that_resends_nothing_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redelivered and retried messages applied again instead of answered from their stored result."""
    decide = ubscore.decide

    def forgetful(*args: object, **kwargs: object) -> Decision:
        decision = decide(*args, **kwargs)  # type: ignore[arg-type]
        return Decision.APPLY if decision == Decision.RESEND else decision

    monkeypatch.setattr(ubscore, "decide", forgetful)
    outcomes = [simulate(seed, SIZE) for seed in range(1, 11)]
    caught = {kind for outcome in outcomes for kind in outcome.violations.counts}
    assert sum(not outcome.ok for outcome in outcomes) >= 5
    assert caught & {"duplicate_result", "seq_conflict", "conservation", "reference_mismatch"}
