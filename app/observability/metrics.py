"""The worker's metrics, on prometheus_client's default registry; /metrics serves them with Faust's own.

Each process counts only what it did, and each worker exports lag only for the
partitions it holds, so Prometheus sums series across workers without double
counting. Names follow Prometheus' conventions (base units, ``_total`` for
counters); the alert rules and the dashboard in docker/ use them, and a test
scrapes a live worker to prove every name they use is exported here.

Every labelled counter series whose label values are known in advance exists at 0
from the process's start (``export_known_series``): an alert's ``increase()`` then
sees a first increment, where a series appearing from nothing would read as flat.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, FrozenSet, Iterable, Sequence, Tuple

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

from app.core.ledger import Status
from app.core.models import EVENT_KINDS
from app.errors import DEAD_LETTER_REASONS
from app.guards.stalls import StallAction
from app.settings import settings

# A ``_created`` series per counter doubles the output and nothing here reads it.
disable_created_metrics()

#: The text format every Prometheus server reads (generate_latest writes it).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: a checkpoint is a few milliseconds, a backlog after a restart minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Inputs per checkpoint, up to UBS_BATCH_MAX (1000 by default).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
STALL_ACTIONS = tuple(action.value for action in StallAction)
#: The views whose answers the gateway counts (app.web.answers, ``counted``), each a ``view`` label.
HTTP_VIEWS = ("submit", "result", "account", "holds", "history", "assets", "register_asset", "asset", "health")
#: Every status code the gateway answers with; each view answers some of them, so some pairs stay at 0 for good.
HTTP_STATUSES = ("200", "201", "202", "400", "401", "403", "404", "409", "413", "422", "499", "500", "503", "504")
#: The consumers whose partitions a worker of each role (UBS_ROLE) exports: the ledger's inputs, the sink's
#: balance.events; a ledger-only worker reports no sink, the sink alone no ledger.
ROLE_CONSUMERS = {"all": ("ledger", "sink"), "ledger": ("ledger",), "sink": ("sink",)}
#: Why the gateway disconnected a client (app.web.limits).
DROP_REASONS = ("header_timeout", "body_timeout")

OPERATIONS = Counter(
    "ubscore_operations_total", "Operations and credit legs given a result, by kind and status.", ["kind", "status"]
)
DUPLICATES = Counter("ubscore_duplicates_total", "Redelivered or retried operations answered from the results table.")
DEAD_LETTERS = Counter("ubscore_dead_letters_total", "Messages sent to balance.operations.dlq, by reason.", ["reason"])
LEGS_REFUSED = Counter(
    "ubscore_legs_refused_total",
    "Legs on balance.credits the agent could not read: money a payer sent that no payee received. Always an alarm.",
)
CREDITS_PARKED = Counter(
    "ubscore_credits_parked_total",
    "Credits that could land nowhere under the balance limit (a returned transfer, a trade's fees): parked for an"
    " operator, as a rejected event that moved nothing. Always an alarm.",
)
PROCESSING_FAILURES = Counter(
    "ubscore_processing_failures_total",
    "Messages whose handling raised an unforeseen error; each was dead-lettered and the partition went on.",
)
INPUT_GAPS = Counter(
    "ubscore_input_gaps_total",
    "Holes in an input partition (records Faust never delivered), read back from Kafka and applied.",
)
INPUT_STALLS = Counter(
    "ubscore_input_stalls_total",
    "Input partitions with pending records that did not reach the agent, by the action taken.",
    ["action"],
)
RECOVERY_STALLS = Counter(
    "ubscore_recovery_stalls_total",
    "Changelog partitions a table recovery waited for without receiving records, by the action taken.",
    ["action"],
)
GROUP_ERRORS_COLLECTED = Counter(
    "ubscore_group_errors_collected_total",
    "Consumer-group errors aiokafka parked for a poll that never came, collected so that the worker rejoins.",
)
APPLIED_LATE = Counter(
    "ubscore_applied_late_total", "Messages applied after a later message of the same user (delivered out of order)."
)
REROUTED = Counter(
    "ubscore_rerouted_total", "Operations that arrived on a partition not owning their user and were re-sent."
)
HOLD_EXPIRIES_SENT = Counter(
    "ubscore_hold_expiries_sent_total", "Expiry legs the expiry timer sent for holds past their expires_at_ms."
)
CHECKPOINTS = Counter("ubscore_checkpoints_total", "Ledger batches made durable and announced.")
CHECKPOINT_INPUTS = Counter("ubscore_checkpoint_inputs_total", "Input messages in those batches.")
CHECKPOINT_SECONDS = Histogram(
    "ubscore_checkpoint_duration_seconds",
    "One checkpoint: results, accounts, outputs and cursors, each acknowledged by Kafka.",
    buckets=LATENCY_BUCKETS,
)
CHECKPOINT_BATCH = Histogram(
    "ubscore_checkpoint_batch_inputs", "Input messages per checkpointed batch.", buckets=BATCH_BUCKETS
)
APPLY_LATENCY = Histogram(
    "ubscore_apply_latency_seconds",
    "From an input's Kafka timestamp to its outputs (events, legs) acknowledged by Kafka.",
    buckets=LATENCY_BUCKETS,
)
SINK_EVENTS = Counter("ubscore_sink_events_total", "Events written to the database by the settlement sink.")
SINK_BATCHES = Counter("ubscore_sink_batches_total", "Batches the settlement sink committed to the database.")
SINK_FAILURES = Counter("ubscore_sink_failures_total", "Failed database writes; each is retried.")
SINK_COMMIT_FAILURES = Counter(
    "ubscore_sink_commit_failures_total",
    "Sink offset commits refused (partitions moved); the batch is rewritten by the next owner.",
)
SINK_SKIPPED = Counter(
    "ubscore_sink_skipped_total", "Messages on balance.events that were not events and were skipped."
)
SINK_PAUSED = Gauge("ubscore_sink_paused", "1 while the sink is waiting for the database to come back.")
SINK_LATENCY = Histogram(
    "ubscore_sink_latency_seconds",
    "From an event's Kafka timestamp to the database acknowledging its batch.",
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "ubscore_http_requests_total", "HTTP requests answered, by view and status code.", ["view", "status"]
)
HTTP_SECONDS = Histogram(
    "ubscore_http_request_duration_seconds",
    "Time to answer an HTTP request, by view and status code (a ?wait=true submit includes the wait).",
    ["view", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_WAITING = Gauge(
    "ubscore_http_waiting_requests",
    "Requests waiting for an operation's result on this worker now (at most UBS_WEB_MAX_WAITERS).",
)
HTTP_CONNECTIONS_DROPPED = Counter(
    "ubscore_http_connections_dropped_total",
    "Clients disconnected because a request's headers or body came too slowly, by reason.",
    ["reason"],
)
CONSUMER_LAG = Gauge(
    "ubscore_consumer_lag_records",
    "End offset minus the group's committed offset, per input partition this worker holds.",
    ["consumer", "topic", "partition"],
)
PARTITIONS_OWNED = Gauge(
    "ubscore_partitions_owned", "Input partitions this worker holds (ledger: of balance.operations).", ["consumer"]
)
RECOVERY_REMAINING = Gauge(
    "ubscore_recovery_remaining_records", "Changelog records the table recovery under way still has to read."
)
COORDINATOR_SILENCE = Gauge(
    "ubscore_coordinator_silence_seconds",
    "Seconds since the ledger's group coordinator last answered a heartbeat or a join (since the start before the"
    " first); past UBS_OWNERSHIP_BOUND_S the worker refuses its partitions' reads (0 in the sink alone).",
)

_lag_lock = threading.Lock()
_lag_series: Dict[str, FrozenSet[Tuple[str, str]]] = {}


def set_lag(consumer: str, lags: Iterable[Tuple[str, int, int]]) -> None:
    """The lag of the (topic, partition, records) a consumer holds now; partitions it lost stop being exported.

    A partition that moved to another worker must vanish here, or the two
    workers' series would both count it.
    """
    current = {(topic, str(partition)): records for topic, partition, records in lags}
    with _lag_lock:
        for topic, partition in _lag_series.get(consumer, frozenset()) - current.keys():
            CONSUMER_LAG.remove(consumer, topic, partition)
        for (topic, partition), records in current.items():
            CONSUMER_LAG.labels(consumer=consumer, topic=topic, partition=partition).set(records)
        _lag_series[consumer] = frozenset(current)
    PARTITIONS_OWNED.labels(consumer=consumer).set(len({partition for _, partition in current}))


_operations: Dict[Tuple[str, str], Any] = {}


def count_operation(kind: str, status: str) -> None:
    """One result of ``ubscore_operations_total``; the series is looked up once per kind and status, not per event."""
    series = _operations.get((kind, status))
    if series is None:
        series = _operations[(kind, status)] = OPERATIONS.labels(kind=kind, status=status)
    series.inc()


def export_known_series(role: str) -> None:
    """Every labelled series whose label values are known in advance, at 0, before anything can scrape them.

    A series born with its first increment has no earlier sample: ``increase()``
    and ``rate()`` read it as flat, so an alert on a reason's first dead letter,
    a view's first 504 or a first stall would never fire (issue 30; Prometheus'
    instrumentation guide, "avoid missing metrics"). Label values that come and
    go (a lag's topic and partition) stay lazy, and so does the HTTP duration
    histogram: 19 series per view and status for a figure no alert reads.
    """
    for kind in EVENT_KINDS:
        for outcome in Status:
            _operations[(kind, outcome.value)] = OPERATIONS.labels(kind=kind, status=outcome.value)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(reason=reason)
    for action in STALL_ACTIONS:
        INPUT_STALLS.labels(action=action)
        RECOVERY_STALLS.labels(action=action)
    for view in HTTP_VIEWS:
        for status in HTTP_STATUSES:
            HTTP_REQUESTS.labels(view=view, status=status)
    for consumer in ROLE_CONSUMERS[role]:
        PARTITIONS_OWNED.labels(consumer=consumer)
    for reason in DROP_REASONS:
        HTTP_CONNECTIONS_DROPPED.labels(reason=reason)


def observe_latencies(histogram: Histogram, now: float, timestamps: Sequence[float]) -> None:
    """One observation per record: ``now`` minus its Kafka timestamp (seconds), never below zero."""
    for timestamp in timestamps:
        histogram.observe(max(0.0, now - timestamp))


def value(name: str, **labels: str) -> float:
    """Current value of one sample (0 when never touched); for health and tests."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# At import: every process that counts (worker, sink alone) has them before its /metrics answers.
export_known_series(settings.role)
