"""What a worker with the Faust app exports at /metrics, beyond the counts its components keep.

- Faust's own Prometheus sensor (``faust.sensors.prometheus``), named ``faust_*``
  whatever the app id, so dashboards work for every deployment. It serves /metrics
  from prometheus_client's default registry, where app.metrics keeps UBSCore's own.
- The ledger's consumer lag for the input partitions this worker holds, read from
  Kafka every ``UBS_LAG_INTERVAL_S`` (app.consumer_lag). It starts with the worker,
  not after the first recovery: lag grows while a worker rebuilds its tables.
  The sink exports its own (app.sink.service), so a sink running alone does too.
"""

from __future__ import annotations

from typing import List, Tuple

from faust.sensors.prometheus import setup_prometheus_sensors

from app.consumer_lag import export_lag
from app.faust_app import app
from app.settings import settings
from app.topics import CREDITS, OPERATIONS

setup_prometheus_sensors(app, pattern="/metrics", name_prefix="faust")


def ledger_partitions() -> List[Tuple[str, int]]:
    """The ledger's input partitions this worker holds now (none before its consumer starts)."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - the consumer is not started yet
        return []
    return [(tp.topic, tp.partition) for tp in assignment if tp.topic in (OPERATIONS, CREDITS)]


@app.startup_task
async def export_ledger_lag() -> None:
    """The ledger's lag into /metrics for as long as the worker runs."""
    await export_lag(settings, "ledger", ledger_partitions)
