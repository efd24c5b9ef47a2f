"""Which partition a user's data lives on, computed the way every Kafka client does.

Faust (through aiokafka), the Java console producer and kcat all place a keyed
message with murmur2 of the key bytes; computing it here lets the agent notice an
operation that a producer put on the wrong partition (a custom partitioner, or no
key) and move it to the user's partition instead of splitting the user's state.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def user_key(user_id: int) -> bytes:
    """The Kafka key of everything about one user: the decimal id as UTF-8 bytes."""
    return str(user_id).encode()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed message."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
