"""Every Kafka topic UBSCore reads or writes, declared once.

Values are raw bytes holding JSON: the agents parse them themselves, because a
message that does not parse must reach the dead-letter topic instead of being
dropped inside a deserializer.

Every topic here is owned by the app: a worker creates the missing ones before
its consumer subscribes (app.frame.kafka_admin), so any component may start first. The
local broker's ``auto.create.topics.enable`` is off, so nothing else creates them
by accident. All user-keyed topics share ``UBS_PARTITIONS``, so
one user's operations, credits, table rows and events meet on one partition.

The two input topics carry money, so their settings are part of the contract and
checked at every start (app.frame.kafka_admin): the broker's time (LogAppendTime),
so no producer chooses when an operation happened; deletion by age only, after
``KEPT_S``, never by size; and credits kept at least as long as operations, since
a leg waits for its partition as long as an operation can.
"""

from __future__ import annotations

from typing import Mapping, Optional

from faust.types import TopicT

from app.faust_app import app
from app.frame.kafka_admin import input_configs
from app.settings import settings

# UBS_TOPIC_PREFIX (default empty) gives a test run or a tenant topics of its own.
OPERATIONS = settings.topic_name("balance.operations")
EVENTS = settings.topic_name("balance.events")
DEAD_LETTERS = settings.topic_name("balance.operations.dlq")
CREDITS = settings.topic_name("balance.credits")
# The asset registry: the changelog of the global ``assets`` table (app.tables), compacted, one partition.
ASSETS = settings.topic_name("balance.assets")


#: How long Kafka and RocksDB keep what the ledger may still need: twice the window in which the
#: ledger treats a result as alive (UBS_RESULTS_RETENTION_S, decided from the row's own time), so
#: physical removal (retention, RocksDB's TTL) never takes a row the ledger still counts on, and
#: an input record that can still be read finds the rows its first application left.
KEPT_S = 2 * settings.results_retention_s
KEPT_MS = KEPT_S * 1000

INPUT_CONFIGS = input_configs(KEPT_MS)


def _declare(*names: str, config: Optional[Mapping[str, str]] = None, outlives: Optional[TopicT] = None) -> TopicT:
    topic = app.topic(*names, partitions=settings.partitions, key_type=bytes, value_type=bytes, config=config)
    return app.own_topic(topic, outlives=outlives)


operations_topic = _declare(OPERATIONS, config=INPUT_CONFIGS)
events_topic = _declare(EVENTS)
# Written only by the ubscore agent; the public operation schema cannot produce a credit.
credits_topic = _declare(CREDITS, config=INPUT_CONFIGS, outlives=operations_topic)
dead_letters_topic = _declare(DEAD_LETTERS)

# The ubscore agent reads operations and credit legs as one stream, so a single
# coroutine owns every change to a partition's tables.
ledger_input = app.topic(OPERATIONS, CREDITS, partitions=settings.partitions, key_type=bytes, value_type=bytes)
