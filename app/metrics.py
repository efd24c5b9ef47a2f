"""Process-local counters and gauges, exposed in Prometheus text format at /metrics.

A dozen numbers do not justify a client library; each worker reports its own
counts, and Prometheus sums them across workers.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, Tuple

Labels = Tuple[Tuple[str, str], ...]

_HELP: Dict[str, Tuple[str, str]] = {
    "ubscore_operations_total": ("counter", "Operations and credit legs given a result, by kind and status."),
    "ubscore_duplicates_total": ("counter", "Redelivered or retried operations answered from the results table."),
    "ubscore_input_gaps_total": (
        "counter",
        "Holes in an input partition (records Faust never delivered), read back from Kafka and applied.",
    ),
    "ubscore_input_stalls_total": (
        "counter",
        "Input partitions with pending records that did not reach the agent, by the action taken (resume, exit).",
    ),
    "ubscore_recovery_stalls_total": (
        "counter",
        "Changelog partitions a table recovery waited for without receiving records, by the action taken.",
    ),
    "ubscore_group_errors_collected_total": (
        "counter",
        "Consumer-group errors aiokafka parked for a poll that never came, collected so that the worker rejoins.",
    ),
    "ubscore_applied_late_total": (
        "counter",
        "Messages applied after a later message of the same user (delivered out of order).",
    ),
    "ubscore_rerouted_total": (
        "counter",
        "Operations that arrived on a partition not owning their user and were re-sent to the owner.",
    ),
    "ubscore_processing_failures_total": (
        "counter",
        "Messages whose handling raised an unforeseen error; each was dead-lettered and the partition went on.",
    ),
    "ubscore_hold_expiries_sent_total": (
        "counter",
        "Expiry legs the expiry timer put on the internal topic for holds past their expires_at_ms.",
    ),
    "ubscore_checkpoints_total": ("counter", "Ledger batches made durable and announced."),
    "ubscore_checkpoint_inputs_total": ("counter", "Input messages in those batches."),
    "ubscore_dead_letters_total": ("counter", "Messages sent to balance.operations.dlq, by reason."),
    "ubscore_sink_events_total": ("counter", "Events written to the database by the settlement sink."),
    "ubscore_sink_batches_total": ("counter", "Batches the settlement sink committed to the database."),
    "ubscore_sink_failures_total": ("counter", "Failed database writes; each is retried."),
    "ubscore_sink_commit_failures_total": (
        "counter",
        "Sink offset commits refused (partitions moved); the batch is rewritten by the next owner.",
    ),
    "ubscore_sink_skipped_total": ("counter", "Messages on balance.events that were not events and were skipped."),
    "ubscore_sink_paused": ("gauge", "1 while the sink is waiting for the database to come back."),
    "ubscore_http_requests_total": ("counter", "HTTP requests answered, by view and status code."),
}

_lock = threading.Lock()
_values: Dict[str, Dict[Labels, float]] = {name: {} for name in _HELP}


def _labels(labels: Dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def inc(name: str, amount: float = 1, **labels: str) -> None:
    """Add to a counter."""
    key = _labels(labels)
    with _lock:
        series = _values[name]
        series[key] = series.get(key, 0) + amount


def set_gauge(name: str, value: float, **labels: str) -> None:
    """Set a gauge."""
    with _lock:
        _values[name][_labels(labels)] = value


def value(name: str, **labels: str) -> float:
    """Current value of one series (0 when never touched); for tests and health."""
    with _lock:
        return _values[name].get(_labels(labels), 0)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render() -> str:
    """All series in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    with _lock:
        snapshot = {name: dict(series) for name, series in _values.items()}
    for name, (kind, help_text) in _HELP.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        series: Iterable[Tuple[Labels, float]] = sorted(snapshot[name].items())
        for labels, number in series:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            rendered = f"{name}{{{label_text}}}" if label_text else name
            lines.append(f"{rendered} {number:g}")
    return "\n".join(lines) + "\n"
