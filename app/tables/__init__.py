"""The ledger's state: two RocksDB tables (rocksdict) backed by changelog topics.

``accounts``: user id -> {"seq": n, "balances": {asset: {"available", "locked"}}}.
``results``:  result key (see ledger.operation_key / credit_key) -> the first event.
``cursors``:  "<input topic>:<partition>" -> the highest input offset applied there,
              so a record Faust skipped shows as a hole even across restarts
              and rebalances (app.input_gaps).

Both are written only by the ubscore agent, on the partition of the user they
belong to. Retention of ``results`` is bounded by time, ``UBS_RESULTS_RETENTION_S``
(default 7 days): RocksDB drops entries older than that at compaction, and the
changelog is ``compact,delete`` with the same retention, so a worker rebuilding
from Kafka sees the same window. A retry with the same op_id inside the window is
applied at most once; one after it is a new operation.
"""

from __future__ import annotations

from app.app import app
from app.settings import settings

accounts = app.Table(
    "accounts",
    partitions=settings.partitions,
    key_type=bytes,  # keys are UTF-8 bytes, stored as they are ("raw")
    options={"driver": "rocksdict"},
    help="Balances and last seq of every user.",
)

results = app.Table(
    "results",
    partitions=settings.partitions,
    key_type=bytes,  # keys are UTF-8 bytes, stored as they are ("raw")
    options={"driver": "rocksdict", "ttl": settings.results_retention_s},
    extra_topic_configs={
        "cleanup.policy": "compact,delete",
        "retention.ms": str(settings.results_retention_s * 1000),
    },
    help="First result of every recent operation and credit leg, for idempotency.",
)

cursors = app.Table(
    "cursors",
    partitions=settings.partitions,
    key_type=bytes,  # keys are UTF-8 bytes, stored as they are ("raw")
    options={"driver": "rocksdict"},
    help="Highest input offset applied, per input topic partition.",
)
