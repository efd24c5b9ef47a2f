"""Creating the app's topics before anything subscribes to them, with the settings they must have.

Faust creates changelog topics itself but subscribes to source topics as they are;
a topic created a moment before the consumer's first metadata request is ignored
until the next refresh, minutes later. So a worker first creates every missing
topic with the admin API, checks the partition counts (a mismatch would split
users across partitions), and waits until the broker's metadata lists them all;
only then does Faust start its consumer. Any component may then start first.

Settings. The ledger's correctness rests on some topic settings: the broker's time
on the input topics, retention by age only, compacted changelogs (app.topics and
app.faust_app say which). A topic gets them when it is created here, and at every
start they are checked on every topic that has any, whoever created it: a setting
that differs is corrected with the admin API (one ``topic_config_corrected`` line
each), and one the broker refuses to change stops the start with a
ConfigurationError naming the topic and the setting. So is a retention order that
does not hold (``outlives``: a topic that must keep records at least as long as
another), before anything is changed. A worker never runs on a topic that could
drop or re-time what the ledger relies on.

Faust gives a changelog its settings only when it creates the topic itself, and
leaves a topic that exists as it is; a changelog made by an older release, by an
operator or by a tool keeps whatever it was made with. Creating the changelogs here,
before Faust looks for them, and checking them like any other topic is what keeps
them compacted and undeleted by size whoever made them.

How a value compares: ``retention.ms`` is a lower bound (keeping records longer,
or forever with -1, is the operator's choice and harms nothing); ``cleanup.policy``
is a set of policies; any other setting must be equal. Kafka's AlterConfigs replaces
all of a topic's own settings with those it is sent (aiokafka has no incremental
form), so a correction sends the topic's current overrides with every wanted
setting on top.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, NoReturn, Optional, Tuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from app.backoff import backoff
from app.errors import ConfigurationError
from app.kafka_clients import new_admin_client

log = logging.getLogger(__name__)

CLEANUP_POLICY = "cleanup.policy"
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
TIMESTAMP_TYPE = "message.timestamp.type"

#: A table's changelog: compacted, and never cut by size (the broker's ``log.retention.bytes`` otherwise applies).
CHANGELOG_CONFIGS: Mapping[str, str] = {CLEANUP_POLICY: "compact", RETENTION_BYTES: "-1"}

#: DescribeConfigs' source of a setting made on the topic itself (v1 and later).
_TOPIC_OVERRIDE = 1


def input_configs(retention_ms: int) -> Dict[str, str]:
    """An input topic's settings: each record takes the broker's time, and records go by age only.

    With LogAppendTime no producer chooses an operation's time, and the time a
    decision uses is in the log, so a replay decides the same. Deletion by age
    only (no compaction, no byte limit) keeps offsets consecutive, which the hole
    reader relies on, and keeps every record for ``retention_ms``.
    """
    return {
        TIMESTAMP_TYPE: "LogAppendTime",
        CLEANUP_POLICY: "delete",
        RETENTION_MS: str(retention_ms),
        RETENTION_BYTES: "-1",
    }


@dataclass(frozen=True)
class Correction:
    """A setting of an existing topic that must change: what it is (None: not reported) and what it must be."""

    topic: str
    name: str
    current: Optional[str]
    wanted: str


def satisfies(name: str, current: Optional[str], wanted: str) -> bool:
    """Whether a topic's value of a setting meets what the ledger needs (rules in the module docstring)."""
    if current is None:
        return False
    if name == CLEANUP_POLICY:
        return _policies(current) == _policies(wanted)
    if name == RETENTION_MS:
        return _kept_ms(current) >= _kept_ms(wanted)
    return current == wanted


def corrections(topic: str, wanted: Mapping[str, str], current: Mapping[str, str]) -> List[Correction]:
    """The settings of ``topic`` whose current values do not meet the wanted ones."""
    return [
        Correction(topic, name, current.get(name), value)
        for name, value in wanted.items()
        if not satisfies(name, current.get(name), value)
    ]


def altered(current: Mapping[str, str], overrides: Mapping[str, str], wanted: Mapping[str, str]) -> Dict[str, str]:
    """The complete set of a topic's own settings to send when one must change.

    AlterConfigs resets whatever it is not sent, so the topic's own settings go
    too. Every wanted setting is made the topic's own, as on a topic created
    here: its current value where that one meets the need (a longer retention
    stays), the wanted one elsewhere.
    """
    pinned = {
        name: current[name] if satisfies(name, current.get(name), value) else value for name, value in wanted.items()
    }
    return {**overrides, **pinned}


def check_outlives(effective: Mapping[str, Mapping[str, str]], outlives: Iterable[Tuple[str, str]]) -> None:
    """Refuse to start unless, for each (longer, shorter) pair, ``longer`` keeps records at least as long.

    A leg on ``balance.credits`` can wait for its partition's worker as long as an
    operation can, so it must be kept at least as long (-1, forever, is longest).
    """
    for longer, shorter in outlives:
        kept, needed = effective[longer].get(RETENTION_MS), effective[shorter].get(RETENTION_MS)
        if _kept_ms(kept) < _kept_ms(needed):
            raise ConfigurationError(
                f"topic {longer} keeps records for {RETENTION_MS}={kept}, less than {shorter} ({RETENTION_MS}="
                f"{needed}): its records could be deleted while those of {shorter} can still arrive; set "
                f"{RETENTION_MS} of {longer} to at least {needed} (-1 keeps them for ever)"
            )


def refused(topic: str, names: Iterable[str], error: str, wanted: Mapping[str, str]) -> ConfigurationError:
    """The error that stops the start when the broker does not let a topic's settings be read or changed."""
    settings = ",".join(f"{name}={wanted[name]}" for name in names)
    return ConfigurationError(
        f"topic {topic} must have {settings} and the broker refused ({error}); set it on the topic "
        f"(kafka-configs --alter --entity-type topics --entity-name {topic} --add-config {settings}) "
        "or allow this worker's principal DescribeConfigs and AlterConfigs on it"
    )


def _policies(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _kept_ms(value: Optional[str]) -> float:
    """How long a ``retention.ms`` keeps records: -1 (any negative) is for ever, a missing one no time at all."""
    if value is None:
        return 0.0
    kept = int(value)
    return math.inf if kept < 0 else float(kept)


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 120.0,
    outlives: Iterable[Tuple[str, str]] = (),
) -> None:
    """Create missing topics, verify partition counts, wait until all are visible, enforce their settings.

    Retries while the broker is unreachable, so workers may start before Kafka.
    ``configs``: the settings each topic is created with and must keep;
    ``outlives``: (topic, other) pairs where topic must keep records at least as long as other.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    order = list(outlives)
    for delay in backoff(0.5, 5.0):
        try:
            await _ensure_once(bootstrap, topics, replication, configs or {}, order)
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if loop.time() > deadline:
                raise
            log.warning("topics_not_ready error=%r retry_in_s=%.1f", exc, delay)
            await asyncio.sleep(delay)


async def _ensure_once(
    bootstrap: str,
    topics: Mapping[str, int],
    replication: int,
    configs: Mapping[str, Mapping[str, str]],
    outlives: List[Tuple[str, str]],
) -> None:
    admin = new_admin_client(bootstrap)
    await admin.start()
    try:
        existing = await _partition_counts(admin, topics)
        missing = [name for name in topics if name not in existing]
        if missing:
            requests = [
                NewTopic(name, topics[name], replication, topic_configs=dict(configs.get(name, {}))) for name in missing
            ]
            try:
                await admin.create_topics(requests)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            log.info("topics_created names=%s", ",".join(missing))
        for _ in range(100):
            existing = await _partition_counts(admin, topics)
            if all(name in existing for name in topics):
                break
            await asyncio.sleep(0.1)
        wrong = {name: existing.get(name) for name in topics if existing.get(name) != topics[name]}
        if wrong:
            raise ConfigurationError(
                "topics exist with other partition counts than UBS_PARTITIONS "
                + ", ".join(f"{name}={count} (want {topics[name]})" for name, count in wrong.items())
            )
        if configs:
            await _enforce_configs(admin, configs, outlives)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> Dict[str, int]:
    described = await admin.describe_topics(list(names))
    counts: Dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _enforce_configs(
    admin: AIOKafkaAdminClient, configs: Mapping[str, Mapping[str, str]], outlives: List[Tuple[str, str]]
) -> None:
    """Correct every topic's settings that differ from ``configs``, after checking the retention order holds."""
    described = await describe_settings(admin, configs)
    fixes = {topic: corrections(topic, wanted, described[topic][0]) for topic, wanted in configs.items()}
    effective = {
        topic: {**current, **{fix.name: fix.wanted for fix in fixes[topic]}}
        for topic, (current, _overrides) in described.items()
    }
    check_outlives(effective, outlives)
    due = {topic: found for topic, found in fixes.items() if found}
    if not due:
        return
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, altered(*described[topic], configs[topic])) for topic in due
    ]
    for response in await admin.alter_configs(resources):
        for code, message, _kind, topic, *_ in response.resources:
            if code:
                _raise_refused(topic, code, message, configs[topic], [fix.name for fix in due[topic]])
    for found in due.values():
        for fix in found:
            log.warning(
                "topic_config_corrected topic=%s name=%s from=%s to=%s", fix.topic, fix.name, fix.current, fix.wanted
            )


async def describe_settings(
    admin: AIOKafkaAdminClient, configs: Mapping[str, Mapping[str, str]]
) -> Dict[str, Tuple[Dict[str, str], Dict[str, str]]]:
    """Per topic: the effective value of every setting, and the settings made on the topic itself."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic) for topic in configs])
    described: Dict[str, Tuple[Dict[str, str], Dict[str, str]]] = {}
    for response in responses:
        for code, message, _kind, topic, entries in response.resources:
            if code:
                _raise_refused(topic, code, message, configs[topic], list(configs[topic]))
            current = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
            own = {entry[0]: entry[1] for entry in entries if entry[1] is not None and _is_override(entry)}
            described[topic] = (current, own)
    return described


def _is_override(entry: Any) -> bool:
    """A setting made on the topic: by source from v1 on, by ``is_default`` (a bool) in v0."""
    marker = entry[3]
    return not marker if isinstance(marker, bool) else marker == _TOPIC_OVERRIDE


def _raise_refused(
    topic: str, code: int, message: Optional[str], wanted: Mapping[str, str], names: List[str]
) -> NoReturn:
    """A retriable error is retried by ensure_topics (a topic not known yet); any other stops the start."""
    error = for_code(code)
    if error.retriable:
        raise error(f"topic {topic}: {message or error.__name__}")
    raise refused(topic, names, f"{error.__name__}: {message or 'no message'}", wanted)
