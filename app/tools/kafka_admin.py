"""Creating the app's topics before anything subscribes to them.

Faust creates changelog topics itself but subscribes to source topics as they are;
a topic created a moment before the consumer's first metadata request is ignored
until the next refresh, minutes later. So a worker first creates every missing
topic with the admin API, checks the partition counts (a mismatch would split
users across partitions), and waits until the broker's metadata lists them all;
only then does Faust start its consumer. Any component may then start first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Dict, Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from app.backoff import backoff
from app.errors import ConfigurationError

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Create missing topics, verify partition counts, wait until all are visible.

    Retries while the broker is unreachable, so workers may start before Kafka.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for delay in backoff(0.5, 5.0):
        try:
            await _ensure_once(bootstrap, topics, replication, configs or {})
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if loop.time() > deadline:
                raise
            log.warning("topics_not_ready error=%r retry_in_s=%.1f", exc, delay)
            await asyncio.sleep(delay)


async def _ensure_once(
    bootstrap: str, topics: Mapping[str, int], replication: int, configs: Mapping[str, Mapping[str, str]]
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> Dict[str, int]:
    described = await admin.describe_topics(list(names))
    counts: Dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts
