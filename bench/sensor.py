"""What Faust's monitoring costs per message: its plain Monitor, the stock Prometheus sensor, and UBSCore's.

Each sensor is driven through the four hooks Faust calls for every message the
ledger takes (received, handed to the stream, done in the stream, acknowledged),
in one process, one after the other, several rounds; the figures are
microseconds per message and their ratio to the plain Monitor, the baseline
Faust always runs. UBSCore's sensor (app.guards.monitoring.FaustSensor) writes the same
``faust_*`` series as the stock one but moves the counts at scrape time.

    python -m bench.sensor              # 20,000 messages per round, 5 rounds
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from app import app
from app.guards.monitoring import FaustSensor

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


class Owner:
    """A stream's task owner; the Monitor keeps counts by it, weakly."""


class Message:
    """What the per-message hooks read and set of a Faust message."""

    def __init__(self) -> None:
        self.time_in: Optional[float] = None
        self.time_out: Optional[float] = None
        self.time_total: Optional[float] = None


class Event:
    def __init__(self) -> None:
        self.message = Message()


def deliver(sensor: Any, stream: Any, tp: TP, offset: int, done: bool = True) -> None:
    """One message through the hooks Faust calls: in, to the stream, out of the stream, acknowledged (if done)."""
    event = Event()
    sensor.on_message_in(tp, offset, event.message)
    state = sensor.on_stream_event_in(tp, offset, stream, event)
    sensor.on_stream_event_out(tp, offset, stream, event, state)
    if done:
        sensor.on_message_out(tp, offset, event.message)


def per_message_us(sensor: Any, stream: Any) -> float:
    """Microseconds per message through the four per-message hooks."""
    tp = TP("balance.operations", 3)
    started = time.perf_counter()
    for offset in range(MESSAGES):
        deliver(sensor, stream, tp, offset)
    return (time.perf_counter() - started) / MESSAGES * 1e6


def main() -> None:
    stream = app.stream(app.topic("balance.operations"))
    stream.task_owner = Owner()  # type: ignore[misc]
    sensors: Dict[str, Callable[[], Any]] = {
        "Monitor (baseline)": Monitor,
        "PrometheusMonitor (stock)": lambda: PrometheusMonitor(FaustMetrics.create(CollectorRegistry(), "a")),
        "FaustSensor (UBSCore)": lambda: FaustSensor(FaustMetrics.create(CollectorRegistry(), "b")),
    }
    built = {name: make() for name, make in sensors.items()}
    figures: Dict[str, List[float]] = {name: [] for name in sensors}
    for _ in range(ROUNDS):  # interleaved, so that a slow moment of the machine hits every sensor
        for name, sensor in built.items():
            figures[name].append(per_message_us(sensor, stream))
    baseline = statistics.median(figures["Monitor (baseline)"])
    print(f"{MESSAGES} messages x {ROUNDS} rounds; median us per message, and over the baseline")
    for name, runs in figures.items():
        median = statistics.median(runs)
        print(f"  {name:28} {median:6.2f} us  x{median / baseline:4.1f}  +{median - baseline:5.2f} us")


if __name__ == "__main__":
    main()
