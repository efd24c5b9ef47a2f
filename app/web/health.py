"""``GET /health``: whether this worker may answer, and what it owns; the one route that needs no key.

An orchestrator or load balancer asks it to tell a worker that serves reads
(200 ``ok``) from one starting, cut off from its group or rebalancing (503).
"""

from __future__ import annotations

from faust.web import Request, Response, View

from app.faust_app import app
from app.frame import ownership
from app.observability import metrics
from app.settings import settings
from app.sink.service import sink_partitions, store
from app.topics import operations_topic
from app.web.answers import counted
from app.web.at_owner import settling


@app.page("/health")
class HealthView(View):
    """Readiness plus what this worker owns; 503 while starting, rebuilding its tables, or cut off from its group.

    ``partitioned``: the worker had an assignment and its group coordinator has
    not answered it within ``UBS_OWNERSHIP_BOUND_S`` (app.frame.ownership); its
    reads are refused until it does. It comes before ``recovering``: a worker
    cut off from Kafka recovers nothing either. ``recovering`` covers a whole
    rebalance (``settling``), not only the changelog reading: reads wait it out.
    """

    @counted("health")
    async def get(self, request: Request) -> Response:
        """Status of this worker."""
        try:
            assignment = app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet
            assignment = set()
        partitions = sorted(tp.partition for tp in assignment if tp.topic == operations_topic.get_topic_name())
        running = getattr(app.consumer, "state", "running") == "running"
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]  # TableManagerT omits it
        recovering = bool(getattr(app, "in_recovery", False)) or not recovered or settling()
        partitioned = ownership.tracker.partitioned()
        status = "starting" if not running else "partitioned" if partitioned else "recovering" if recovering else "ok"
        silence_s = ownership.tracker.silence_s()
        body = {
            "status": status,
            "worker": settings.canonical_url,
            "partitions": partitions,
            "rebalancing": bool(app.rebalancing),
            # None: this worker runs no sink; [] one that has not joined its group yet (or is rebalancing).
            "sink_partitions": sink_partitions() if settings.role == "all" else None,
            "database": "connected" if store.connected else "disconnected",
            "sink_paused": bool(metrics.value("ubscore_sink_paused")),
            "processing_guarantee": settings.processing_guarantee,
            # Since the group coordinator last answered; None before the first assignment.
            "coordinator_silence_s": None if silence_s is None else round(silence_s, 1),
            "ownership_bound_s": ownership.tracker.bound_s,
        }
        return self.json(body, status=200 if status == "ok" else 503)
