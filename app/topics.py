"""Every Kafka topic UBSCore reads or writes, declared once.

Values are raw bytes holding JSON: the agents parse them themselves, because a
message that does not parse must reach the dead-letter topic instead of being
dropped inside a deserializer. All user-keyed topics share ``UBS_PARTITIONS``, so
one user's operations, credits, table rows and events meet on one partition.
"""

from __future__ import annotations

from app.app import app
from app.settings import settings

# UBS_TOPIC_PREFIX (default empty) gives a test run or a tenant topics of its own.
OPERATIONS = f"{settings.topic_prefix}balance.operations"
EVENTS = f"{settings.topic_prefix}balance.events"
DEAD_LETTERS = f"{settings.topic_prefix}balance.operations.dlq"
CREDITS = f"{settings.topic_prefix}balance.credits"

operations_topic = app.topic(OPERATIONS, partitions=settings.partitions, key_type=bytes, value_type=bytes)
events_topic = app.topic(EVENTS, partitions=settings.partitions, key_type=bytes, value_type=bytes)
credits_topic = app.topic(
    CREDITS,
    partitions=settings.partitions,
    key_type=bytes,
    value_type=bytes,
    # Internal: written only by the ubscore agent, never from client input.
    internal=True,
)
dead_letters_topic = app.topic(DEAD_LETTERS, partitions=settings.partitions, key_type=bytes, value_type=bytes)

# The ubscore agent reads operations and credit legs as one stream, so a single
# coroutine owns every change to a partition's tables.
ledger_input = app.topic(
    OPERATIONS, CREDITS, partitions=settings.partitions, key_type=bytes, value_type=bytes
)
