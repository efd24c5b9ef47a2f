"""Faust's Prometheus figures, counted by Faust's Monitor per message and moved into faust_* series at scrape."""

from __future__ import annotations

from typing import Any, Optional

from faust.sensors.prometheus import FaustMetrics
from faust.types import TP
from prometheus_client import CollectorRegistry

from app import app
from app.guards.monitoring import FaustSensor
from bench.sensor import Owner
from bench.sensor import deliver as drive

TOPIC = "it.balance.operations"


def deliver(sensor: FaustSensor, stream: Any, offset: int, done: bool = True) -> None:
    """One message through the hooks Faust calls (bench.sensor drives them the same way)."""
    drive(sensor, stream, TP(TOPIC, 3), offset, done)


def test_the_series_show_what_the_monitor_counted_once_synced() -> None:
    registry = CollectorRegistry()
    sensor = FaustSensor(FaustMetrics.create(registry, "t"))
    stream = app.stream(app.topic(TOPIC))
    stream.task_owner = Owner()  # type: ignore[misc]
    for offset in (10, 11):
        deliver(sensor, stream, offset)
    deliver(sensor, stream, 12, done=False)
    assert registry.get_sample_value("t_messages_received_total") == 0  # nothing per message

    def value(name: str, **labels: str) -> Optional[float]:
        return registry.get_sample_value(name, labels)

    for _ in range(2):  # a second sync adds nothing
        sensor.sync()
        assert value("t_messages_received_total") == 3
        assert value("t_messages_received_per_topic_total", topic=TOPIC) == 3
        assert value("t_messages_received_per_topics_partition", topic=TOPIC, partition="3") == 12
        assert value("t_active_messages") == 1
        assert value("t_total_events_total") == 3
        assert value("t_total_active_events") == 0
        assert value("t_events_runtime_ms_count") == 3
    per_stream = [s for m in registry.collect() if m.name == "t_total_events_per_stream" for s in m.samples]
    assert [s.value for s in per_stream if s.name.endswith("_total")] == [3]


def test_after_a_rebalance_the_per_topic_series_count_again_from_zero() -> None:
    registry = CollectorRegistry()
    sensor = FaustSensor(FaustMetrics.create(registry, "t"))
    stream = app.stream(app.topic(TOPIC))
    stream.task_owner = Owner()  # type: ignore[misc]
    deliver(sensor, stream, 1)
    sensor.sync()
    sensor.on_rebalance_end(app, sensor.on_rebalance_start(app))
    deliver(sensor, stream, 2)
    deliver(sensor, stream, 3)
    sensor.sync()
    assert registry.get_sample_value("t_messages_received_total") == 3
    assert registry.get_sample_value("t_messages_received_per_topic_total", {"topic": TOPIC}) == 2
