"""What the ledger agent counts and times per checkpoint, read back from prometheus_client's registry."""

from __future__ import annotations

import time
from typing import Dict

from app.observability import metrics

from .conftest import Ledger

FAST_BUCKET = "ubscore_apply_latency_seconds_bucket"


def snapshot() -> Dict[str, float]:
    names = (
        "ubscore_apply_latency_seconds_count",
        "ubscore_apply_latency_seconds_sum",
        "ubscore_checkpoint_batch_inputs_sum",
        "ubscore_checkpoint_duration_seconds_count",
        "ubscore_checkpoints_total",
    )
    return {**{name: metrics.value(name) for name in names}, "fast": metrics.value(FAST_BUCKET, le="2.5")}


async def test_each_input_is_timed_from_its_kafka_timestamp_to_its_checkpoint(ledger: Ledger) -> None:
    before = snapshot()
    accepted = metrics.value("ubscore_operations_total", kind="deposit", status="accepted")
    rejected = metrics.value("ubscore_operations_total", kind="withdraw", status="rejected")
    written = time.time() - 5.0  # the operations sat in Kafka for five seconds
    await ledger.submit(timestamp=written, op_id="m1", kind="deposit", user_id=31, asset=1, amount=10)
    await ledger.submit(timestamp=written, op_id="m2", kind="withdraw", user_id=31, asset=1, amount=99)
    after = snapshot()

    def moved(name: str) -> float:
        return after[name] - before[name]

    checkpoints = moved("ubscore_checkpoints_total")
    assert moved("ubscore_apply_latency_seconds_count") == 2
    assert 10.0 <= moved("ubscore_apply_latency_seconds_sum") < 20.0
    assert moved("fast") == 0  # neither took under 2.5 s
    assert moved("ubscore_checkpoint_batch_inputs_sum") == 2  # both inputs, in one batch or two
    assert moved("ubscore_checkpoint_duration_seconds_count") == checkpoints >= 1
    assert metrics.value("ubscore_operations_total", kind="deposit", status="accepted") == accepted + 1
    assert metrics.value("ubscore_operations_total", kind="withdraw", status="rejected") == rejected + 1


def test_lag_of_partitions_this_worker_no_longer_holds_is_not_exported() -> None:
    metrics.set_lag("sink", [("balance.events", 0, 5), ("balance.events", 1, 7)])
    assert metrics.value("ubscore_consumer_lag_records", consumer="sink", topic="balance.events", partition="1") == 7
    assert metrics.value("ubscore_partitions_owned", consumer="sink") == 2
    metrics.set_lag("sink", [("balance.events", 0, 2)])  # partition 1 moved to another worker
    assert metrics.value("ubscore_consumer_lag_records", consumer="sink", topic="balance.events", partition="0") == 2
    assert (
        metrics.REGISTRY.get_sample_value(
            "ubscore_consumer_lag_records", {"consumer": "sink", "topic": "balance.events", "partition": "1"}
        )
        is None
    )
    assert metrics.value("ubscore_partitions_owned", consumer="sink") == 1
    metrics.set_lag("sink", [])
    assert metrics.value("ubscore_partitions_owned", consumer="sink") == 0
