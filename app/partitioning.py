"""Which partition a user's data lives on, computed the way every Kafka client does.

Faust (through aiokafka), the Java console producer and kcat all place a keyed
message with murmur2 of the key bytes; computing it here lets the agent notice an
operation that a producer put on the wrong partition (a custom partitioner, or no
key) and move it to the user's partition instead of splitting the user's state.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


def user_key(user_id: int) -> bytes:
    """The Kafka key of everything about one user: the decimal id as UTF-8 bytes."""
    return str(user_id).encode()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed message.

    murmur2 is pure Python here; user keys (at most 20 digits) are remembered,
    any other key is hashed each time, so no client can fill the cache with big keys.
    """
    if len(key) <= 20:
        return _user_partition(bytes(key), partitions)
    return _murmur_partition(key, partitions)


@lru_cache(maxsize=1 << 16)
def _user_partition(key: bytes, partitions: int) -> int:
    return _murmur_partition(key, partitions)


def _murmur_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
