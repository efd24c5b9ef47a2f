"""What a worker with the Faust app exports at /metrics, beyond the counts its components keep.

- Faust's own Prometheus sensor (``faust.sensors.prometheus``), named ``faust_*``
  whatever the app id, so dashboards work for every deployment. Its metrics live
  in prometheus_client's default registry beside app.metrics', and /metrics serves
  that registry whole.
- The ledger's consumer lag for the input partitions this worker holds, read from
  Kafka every ``UBS_LAG_INTERVAL_S`` (app.consumer_lag). It starts with the worker,
  not after the first recovery: lag grows while a worker rebuilds its tables.
  The sink exports its own (app.sink.service), so a sink running alone does too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, cast

from aiohttp import web
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, EventT, Message, StreamT
from faust.web import Request, Response, View
from prometheus_client import REGISTRY, generate_latest

from app.consumer_lag import export_lag
from app.faust_app import app
from app.settings import settings
from app.topics import CREDITS, OPERATIONS

#: The text format every Prometheus server reads (generate_latest writes it).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


class FaustSensor(PrometheusMonitor):
    """Faust's Prometheus sensor, with its per-message label lookups made once per topic, partition and stream.

    The stock sensor looks each labelled series up, and renders and normalises
    the stream's name, for every message: several times the cost of the rest of
    Faust's monitoring. The figures are the same; the series are cached here and
    the cache is dropped whenever the sensor drops its series (rebalances).
    """

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._faust = metrics
        self._by_topic: Dict[str, Any] = {}
        self._by_tp: Dict[TP, Any] = {}
        self._by_stream: Dict[StreamT, Any] = {}
        self._end_by_tp: Dict[TP, Any] = {}

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        """A message reached Faust's consumer."""
        Monitor.on_message_in(self, tp, offset, message)
        self._faust.messages_received.inc()
        self._faust.active_messages.inc()
        topic = self._by_topic.get(tp.topic)
        if topic is None:
            topic = self._by_topic[tp.topic] = self._faust.messages_received_per_topics.labels(topic=tp.topic)
        topic.inc()
        position = self._by_tp.get(tp)
        if position is None:
            labels = {"topic": tp.topic, "partition": tp.partition}
            position = self._by_tp[tp] = self._faust.messages_received_per_topics_partition.labels(**labels)
        position.set(offset)

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT, event: EventT) -> Optional[Dict]:
        """A stream took the message."""
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        self._faust.total_events.inc()
        self._faust.total_active_events.inc()
        series = self._by_stream.get(stream)
        if series is None:
            name = f"stream.{self._stream_label(stream)}.events"
            series = self._by_stream[stream] = self._faust.total_events_per_stream.labels(stream=name)
        series.inc()
        return state

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        """Faust's consumer saw a partition's highwater (once per record it hands over)."""
        Monitor.track_tp_end_offset(self, tp, offset)
        end = self._end_by_tp.get(tp)
        if end is None:
            end = self._end_by_tp[tp] = self._faust.topic_partition_end_offset.labels(
                topic=tp.topic, partition=tp.partition
            )
        end.set(offset)

    def on_rebalance_start(self, app: Any) -> Dict:
        """The stock sensor drops its per-topic series here: so do the caches."""
        self._forget()
        return super().on_rebalance_start(app)

    def on_rebalance_end(self, app: Any, state: Dict) -> None:
        """As at the start."""
        super().on_rebalance_end(app, state)
        self._forget()

    def _forget(self) -> None:
        self._by_topic.clear()
        self._by_tp.clear()
        self._end_by_tp.clear()


app.monitor = FaustSensor(FaustMetrics.create(REGISTRY, "faust"))


@app.page("/metrics")
class MetricsView(View):
    """Prometheus scrape endpoint: UBSCore's metrics and Faust's, from one registry."""

    async def get(self, request: Request) -> Response:
        """Text exposition format."""
        answer = web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": TEXT_FORMAT})
        return cast(Response, answer)  # Faust's Response is aiohttp's


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
