"""Retention and time settings, decided without Kafka (issue 23).

The topic settings (app.frame.kafka_admin): what a topic is created with, which values
of an existing topic are corrected, when the start is refused. Then the table side:
where a rebuild starts once a changelog's first records are gone, and which local
stores are not trusted (app.frame.bulk_recovery, app.frame.local_state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import faust
import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from faust.types import TP

from app.errors import ConfigurationError
from app.frame import kafka_admin
from app.frame.bulk_recovery import _Record, far_behind
from app.frame.kafka_admin import (
    CHANGELOG_CONFIGS,
    Correction,
    altered,
    check_outlives,
    corrections,
    input_configs,
    satisfies,
)
from app.frame.local_state import behind_log_start, drop_behind_log_start

WEEK_MS = 7 * 24 * 3600 * 1000
WANTED = input_configs(2 * WEEK_MS)
#: What the broker reports for a topic made with its defaults (the local stack's server.properties).
DEFAULTS = {
    "message.timestamp.type": "CreateTime",
    "cleanup.policy": "delete",
    "retention.ms": str(WEEK_MS),
    "retention.bytes": "1073741824",
}


def test_input_topics_take_the_broker_s_time_and_go_by_age_only() -> None:
    assert WANTED == {
        "message.timestamp.type": "LogAppendTime",
        "cleanup.policy": "delete",
        "retention.ms": str(2 * WEEK_MS),
        "retention.bytes": "-1",
    }
    assert CHANGELOG_CONFIGS == {"cleanup.policy": "compact", "retention.bytes": "-1"}


def test_a_topic_made_with_the_broker_s_defaults_is_corrected_in_every_setting_that_matters() -> None:
    assert corrections("ops", WANTED, DEFAULTS) == [
        Correction("ops", "message.timestamp.type", "CreateTime", "LogAppendTime"),
        Correction("ops", "retention.ms", str(WEEK_MS), str(2 * WEEK_MS)),
        Correction("ops", "retention.bytes", "1073741824", "-1"),
    ]
    assert corrections("ops", WANTED, WANTED) == []


def test_retention_ms_is_a_lower_bound_and_minus_one_is_for_ever() -> None:
    wanted = str(2 * WEEK_MS)
    assert satisfies("retention.ms", wanted, wanted)
    assert satisfies("retention.ms", str(4 * WEEK_MS), wanted)  # kept longer: the operator's choice
    assert satisfies("retention.ms", "-1", wanted)
    assert not satisfies("retention.ms", str(2 * WEEK_MS - 1), wanted)
    assert not satisfies("retention.ms", None, wanted)


def test_cleanup_policy_is_a_set_and_other_settings_must_be_equal() -> None:
    assert satisfies("cleanup.policy", "delete,compact", "compact,delete")
    assert not satisfies("cleanup.policy", "compact", "compact,delete")
    assert not satisfies("cleanup.policy", "compact,delete", "compact")
    assert not satisfies("retention.bytes", "1073741824", "-1")
    assert not satisfies("message.timestamp.type", "CreateTime", "LogAppendTime")
    assert satisfies("message.timestamp.type", "LogAppendTime", "LogAppendTime")


def test_a_correction_keeps_the_topic_s_other_own_settings() -> None:
    """AlterConfigs resets what it is not sent: the topic's overrides go with the wanted settings."""
    own = {"retention.ms": "1000", "min.insync.replicas": "2"}
    assert altered({**DEFAULTS, **own}, own, WANTED) == {**WANTED, "min.insync.replicas": "2"}


def test_a_correction_keeps_a_longer_retention() -> None:
    current = {**DEFAULTS, "retention.ms": "-1"}
    assert altered(current, {"retention.ms": "-1"}, WANTED) == {**WANTED, "retention.ms": "-1"}


def test_credits_kept_for_less_than_operations_refuse_the_start() -> None:
    order = [("credits", "operations")]

    def kept(credits: str, operations: str) -> Dict[str, Dict[str, str]]:
        return {"credits": {"retention.ms": credits}, "operations": {"retention.ms": operations}}

    check_outlives(kept("1000", "1000"), order)
    check_outlives(kept("2000", "1000"), order)
    check_outlives(kept("-1", "1000"), order)
    check_outlives(kept("-1", "-1"), order)
    with pytest.raises(ConfigurationError, match=r"topic credits keeps records for retention\.ms=999, less than"):
        check_outlives(kept("999", "1000"), order)
    with pytest.raises(ConfigurationError, match=r"retention\.ms of credits to at least -1"):
        check_outlives(kept(str(10**12), "-1"), order)


# -- the start-time check against a broker's answers ---------------------------------------------------------------


@dataclass
class _Response:
    resources: List[Tuple[Any, ...]]


@dataclass
class FakeAdmin:
    """A broker: DescribeConfigs answered from ``topics``, AlterConfigs recorded; each fails with its error code."""

    topics: Dict[str, Dict[str, Tuple[str, int]]]
    describe_error: int = 0
    alter_error: int = 0
    altered: List[Tuple[str, Dict[str, str]]] = field(default_factory=list)

    async def describe_configs(self, resources: List[Any]) -> List[_Response]:
        entries = []
        for resource in resources:
            found = self.topics[resource.name]
            rows = [(name, value, False, source, False, []) for name, (value, source) in found.items()]
            entries.append((self.describe_error, "denied" if self.describe_error else "", 2, resource.name, rows))
        return [_Response(entries)]

    async def alter_configs(self, resources: List[Any]) -> List[_Response]:
        self.altered.extend((resource.name, dict(resource.configs)) for resource in resources)
        message = "denied" if self.alter_error else None
        return [_Response([(self.alter_error, message, 2, resource.name) for resource in resources])]


DEFAULT_SOURCE, TOPIC_SOURCE = 5, 1


def _described(values: Mapping[str, str], own: Mapping[str, str] = {}) -> Dict[str, Tuple[str, int]]:  # noqa: B006
    entries = {name: (value, DEFAULT_SOURCE) for name, value in values.items()}
    entries.update({name: (value, TOPIC_SOURCE) for name, value in own.items()})
    return entries


async def _enforce(admin: FakeAdmin, configs: Mapping[str, Mapping[str, str]], order: Any = ()) -> None:
    await kafka_admin._enforce_configs(admin, configs, list(order))  # type: ignore[arg-type]  # noqa: SLF001


async def test_wrong_settings_are_corrected_with_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin({"ops": _described(DEFAULTS, own={"min.insync.replicas": "2"})})
    with caplog.at_level(logging.WARNING, logger="app.frame.kafka_admin"):
        await _enforce(admin, {"ops": WANTED})
    assert admin.altered == [("ops", {"min.insync.replicas": "2", **WANTED})]
    lines = [record.getMessage() for record in caplog.records]
    assert "topic_config_corrected topic=ops name=message.timestamp.type from=CreateTime to=LogAppendTime" in lines
    assert len(lines) == 3


async def test_settings_that_hold_are_left_alone() -> None:
    admin = FakeAdmin({"ops": _described({**WANTED, "retention.ms": "-1"})})
    await _enforce(admin, {"ops": WANTED})
    assert admin.altered == []


async def test_a_correction_the_broker_refuses_stops_the_start_naming_topic_and_setting() -> None:
    admin = FakeAdmin({"ops": _described(DEFAULTS)}, alter_error=29)  # TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(ConfigurationError) as refused:
        await _enforce(admin, {"ops": WANTED})
    message = str(refused.value)
    assert "topic ops" in message and "message.timestamp.type=LogAppendTime" in message, message
    assert "TopicAuthorizationFailedError" in message


async def test_settings_the_broker_will_not_show_stop_the_start() -> None:
    admin = FakeAdmin({"ops": _described(DEFAULTS)}, describe_error=29)
    with pytest.raises(ConfigurationError, match="topic ops must have message.timestamp.type=LogAppendTime"):
        await _enforce(admin, {"ops": WANTED})


async def test_a_topic_the_broker_does_not_know_yet_is_retried() -> None:
    admin = FakeAdmin({"ops": _described(DEFAULTS)}, describe_error=3)  # UNKNOWN_TOPIC_OR_PARTITION
    with pytest.raises(UnknownTopicOrPartitionError):
        await _enforce(admin, {"ops": WANTED})


async def test_a_broken_retention_order_is_refused_before_anything_changes() -> None:
    admin = FakeAdmin(
        {
            "ops": _described({**WANTED, "retention.ms": "-1"}),
            "credits": _described(DEFAULTS),
        }
    )
    with pytest.raises(ConfigurationError, match="topic credits keeps records"):
        await _enforce(admin, {"ops": WANTED, "credits": WANTED}, [("credits", "ops")])
    assert admin.altered == []


def test_the_app_declares_what_it_relies_on() -> None:
    from app import app
    from app.tables import accounts, results
    from app.topics import CREDITS, KEPT_MS, KEPT_S, OPERATIONS, credits_topic, operations_topic

    assert KEPT_S == 2 * 7 * 24 * 3600 and KEPT_MS == KEPT_S * 1000  # twice UBS_RESULTS_RETENTION_S's default
    assert operations_topic.config == credits_topic.config == input_configs(KEPT_MS)
    assert (CREDITS, OPERATIONS) in app.outlives
    assert results.changelog_topic.config == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(KEPT_MS),
        "retention.bytes": "-1",
    }
    assert results.options["ttl"] == KEPT_S
    assert not accounts.changelog_topic.config  # compact-only: CHANGELOG_CONFIGS, added by app.faust_app


# -- where a rebuild starts ----------------------------------------------------------------------------------------

A = TP("ubscore-results-changelog", 0)
B = TP("ubscore-results-changelog", 1)


def test_a_rebuild_in_bulk_starts_no_earlier_than_the_log_start() -> None:
    # A is fresh, its first 40 records deleted; B applied up to 59, the log start is behind it.
    offsets: Dict[TP, Optional[int]] = {A: None, B: 59}
    highwaters = {A: 99, B: 99}
    assert far_behind([A, B], offsets, highwaters, minimum=1, log_starts={A: 40, B: 10}) == {A: 40, B: 60}
    assert far_behind([A], offsets, highwaters, minimum=61, log_starts={A: 40}) == {}  # 60 records wait, not 61
    assert far_behind([A], offsets, highwaters, minimum=1, log_starts={A: 100}) == {}  # everything deleted


def test_a_store_is_behind_the_log_start_when_the_next_record_it_needs_is_gone() -> None:
    assert behind_log_start(5, 7)  # offset 6 was deleted
    assert not behind_log_start(5, 6)  # offset 6 is the first still there
    assert not behind_log_start(5, 0)
    assert not behind_log_start(None, 7)  # nothing local to distrust
    assert not behind_log_start(-1, 7)
    assert not behind_log_start(5, None)


def test_a_store_behind_the_log_start_is_emptied_and_read_from_the_log_start(tmp_path: Path) -> None:
    app = faust.App("canary", broker="kafka://localhost:1", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("results", partitions=2, key_type=bytes, options={"driver": "rocksdict"})
    behind, current = (TP(table.changelog_topic.get_topic_name(), partition) for partition in (0, 1))
    table.apply_changelog_batch([_Record(behind, 5, b"old", b"1"), _Record(current, 9, b"kept", b"2")])  # type: ignore[arg-type]
    offsets: Dict[TP, Optional[int]] = {behind: 5, current: 9}
    tables = {behind: table, current: table}

    dropped = drop_behind_log_start(tables, [behind, current], offsets, {behind: 7, current: 7})  # type: ignore[arg-type]

    assert dropped == [behind] and offsets == {behind: None, current: 9}
    assert table.persisted_offset(behind) is None and table.persisted_offset(current) == 9
    db = table.data._db_for_partition  # type: ignore[attr-defined]  # noqa: SLF001 - what the store holds
    assert db(0).get(b"old") is None and db(1).get(b"kept") == b"2"
