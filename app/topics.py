"""Every Kafka topic UBSCore reads or writes, declared once.

Values are raw bytes holding JSON: the agents parse them themselves, because a
message that does not parse must reach the dead-letter topic instead of being
dropped inside a deserializer.

Every topic here is owned by the app: a worker creates the missing ones before
its consumer subscribes (app.tools.kafka_admin), so any component may start first. The
local broker's ``auto.create.topics.enable`` is off, so nothing else creates them
by accident. All user-keyed topics share ``UBS_PARTITIONS``, so
one user's operations, credits, table rows and events meet on one partition.
"""

from __future__ import annotations

from faust.types import TopicT

from app.faust_app import app
from app.settings import settings

# UBS_TOPIC_PREFIX (default empty) gives a test run or a tenant topics of its own.
OPERATIONS = settings.topic_name("balance.operations")
EVENTS = settings.topic_name("balance.events")
DEAD_LETTERS = settings.topic_name("balance.operations.dlq")
CREDITS = settings.topic_name("balance.credits")
# The asset registry: the changelog of the global ``assets`` table (app.tables), compacted, one partition.
ASSETS = settings.topic_name("balance.assets")


def _declare(*names: str) -> TopicT:
    return app.own_topic(app.topic(*names, partitions=settings.partitions, key_type=bytes, value_type=bytes))


operations_topic = _declare(OPERATIONS)
events_topic = _declare(EVENTS)
# Written only by the ubscore agent; the public operation schema cannot produce a credit.
credits_topic = _declare(CREDITS)
dead_letters_topic = _declare(DEAD_LETTERS)

# The ubscore agent reads operations and credit legs as one stream, so a single
# coroutine owns every change to a partition's tables.
ledger_input = app.topic(OPERATIONS, CREDITS, partitions=settings.partitions, key_type=bytes, value_type=bytes)
