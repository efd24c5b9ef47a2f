"""What a worker with the Faust app exports at /metrics, beyond the counts its components keep.

- Faust's own Prometheus sensor (``faust.sensors.prometheus``), named ``faust_*``
  whatever the app id, so dashboards work for every deployment. Its metrics live
  in prometheus_client's default registry beside app.observability.metrics', and /metrics serves
  that registry whole.
- The ledger's consumer lag for the input partitions this worker holds, read from
  Kafka every ``UBS_LAG_INTERVAL_S`` (app.observability.consumer_lag). It starts with the worker,
  not after the first recovery: lag grows while a worker rebuilds its tables.
  The sink exports its own (app.sink.service), so a sink running alone does too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, cast

from aiohttp import web
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import REGISTRY, generate_latest

from app.faust_app import app
from app.observability.consumer_lag import export_lag
from app.observability.metrics import TEXT_FORMAT
from app.settings import settings
from app.topics import CREDITS, OPERATIONS
from app.web.auth import METRICS_READ
from app.web.guard import requires


class FaustSensor(PrometheusMonitor):
    """Faust's Prometheus sensor, its per-message figures brought up to date at each scrape.

    Faust's own Monitor already counts every message and event in plain integers;
    the stock sensor adds several prometheus_client updates per message on top
    (each takes a lock, and it renders the stream's name every time), several times
    the cost of the rest of Faust's monitoring. Here the per-message hooks are the
    Monitor's alone, and ``sync``, which /metrics calls before it renders, moves the
    counts into the same ``faust_*`` series the stock sensor writes. The hooks that
    run once per rebalance, commit or send stay the stock sensor's.
    """

    on_message_in = Monitor.on_message_in
    on_stream_event_in = Monitor.on_stream_event_in
    on_message_out = Monitor.on_message_out
    track_tp_end_offset = Monitor.track_tp_end_offset

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._faust = metrics
        #: What each counter series has been given so far, by (counter, label values).
        self._pushed: Dict[Tuple[Any, Tuple[str, ...]], int] = {}

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: Optional[Dict] = None
    ) -> None:
        """A stream is done with an event: its runtime is the one figure kept per event."""
        Monitor.on_stream_event_out(self, tp, offset, stream, event, state)
        if state is not None:
            self._faust.events_runtime_latency.observe(self.secs_to_ms(self.events_runtime[-1]))

    def sync(self) -> None:
        """The Monitor's counts into the ``faust_*`` series; run on the event loop, like the hooks."""
        faust = self._faust
        self._advance(faust.messages_received, (), self.messages_received_total)
        faust.active_messages.set(self.messages_active)
        for topic, count in list(self.messages_received_by_topic.items()):
            self._advance(faust.messages_received_per_topics, (topic,), count)
        for tp, offset in list(self.tp_read_offsets.items()):
            faust.messages_received_per_topics_partition.labels(topic=tp.topic, partition=tp.partition).set(offset)
        self._advance(faust.total_events, (), self.events_total)
        faust.total_active_events.set(self.events_active)
        for stream, key in list(self.stream_lookup.items()):
            name = f"stream.{self._stream_label(stream)}.events"
            self._advance(faust.total_events_per_stream, (name,), self.events_by_stream[key])
        for tp, offset in list(self.tp_end_offsets.items()):
            faust.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition).set(offset)

    def on_rebalance_start(self, app: Any) -> Dict:
        """The stock sensor drops its per-topic series here; they count again from zero, as it does."""
        state = super().on_rebalance_start(app)
        self._restart_topic_series()
        return state

    def on_rebalance_end(self, app: Any, state: Dict) -> None:
        """As at the start."""
        super().on_rebalance_end(app, state)
        self._restart_topic_series()

    def _restart_topic_series(self) -> None:
        for topic, count in self.messages_received_by_topic.items():
            self._pushed[(self._faust.messages_received_per_topics, (topic,))] = count

    def _advance(self, counter: Any, labels: Tuple[str, ...], total: int) -> None:
        key = (counter, labels)
        pushed = self._pushed.get(key, 0)
        if total > pushed:
            (counter.labels(*labels) if labels else counter).inc(total - pushed)
            self._pushed[key] = total


sensor = FaustSensor(FaustMetrics.create(REGISTRY, "faust"))
app.monitor = sensor


@app.page("/metrics")
class MetricsView(View):
    """Prometheus scrape endpoint: UBSCore's metrics and Faust's, from one registry."""

    @requires(METRICS_READ)
    async def get(self, request: Request) -> Response:
        """Text exposition format."""
        sensor.sync()
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
