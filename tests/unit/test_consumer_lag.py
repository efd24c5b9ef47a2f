"""Lag arithmetic: end offset minus the group's position, which without a commit is the first record kept."""

from __future__ import annotations

import pytest

from app.observability.consumer_lag import PartitionLag, group_of
from app.settings import load


def lag(end: int, committed: int | None, beginning: int = 0) -> int:
    return PartitionLag("ledger", "ubscore", "balance.operations", 0, end, committed, beginning).lag


def test_lag_is_what_the_group_has_not_committed() -> None:
    assert lag(100, 60) == 40
    assert lag(100, 100) == 0
    assert lag(0, None) == 0


def test_without_a_commit_the_group_starts_at_the_first_record_kept() -> None:
    assert lag(100, None) == 100
    assert lag(100, None, beginning=30) == 70
    assert lag(100, 10, beginning=30) == 70  # retention removed records the group never read


def test_each_consumer_reads_its_own_group_and_topics() -> None:
    settings = load({"UBS_APP_ID": "prod", "UBS_TOPIC_PREFIX": "eu."})
    assert group_of(settings, "ledger") == ("prod", ["eu.balance.operations", "eu.balance.credits"])
    assert group_of(settings, "sink") == ("prod-settlement", ["eu.balance.events"])
    with pytest.raises(ValueError):
        group_of(settings, "other")
