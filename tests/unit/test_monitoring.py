"""The monitoring assets name only metrics a worker exports, and the dashboard is well formed.

promtool checks the rules' syntax and behaviour (docker/check-monitoring); a
mistyped metric name is valid PromQL, though, and only shows as a silent alert
or an empty panel. So the names are checked here against the catalogue of the
worker's metrics, and the live-scrape test checks them against a real worker.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests import monitoring
from tests.monitoring import (
    dashboard_expressions,
    exported_family,
    expressions_in_dashboard,
    expressions_in_rules_text,
    label_names,
    metric_names,
    rule_expressions,
)

DATASOURCE_UID = "ubscore-prometheus"

#: What a worker exports at /metrics (app/metrics.py and Faust's Prometheus sensor), by type.
CATALOGUE: Dict[str, str] = {
    "ubscore_operations_total": "counter",
    "ubscore_duplicates_total": "counter",
    "ubscore_dead_letters_total": "counter",
    "ubscore_processing_failures_total": "counter",
    "ubscore_legs_refused_total": "counter",
    "ubscore_credits_parked_total": "counter",
    "ubscore_input_gaps_total": "counter",
    "ubscore_input_stalls_total": "counter",
    "ubscore_recovery_stalls_total": "counter",
    "ubscore_group_errors_collected_total": "counter",
    "ubscore_applied_late_total": "counter",
    "ubscore_rerouted_total": "counter",
    "ubscore_hold_expiries_sent_total": "counter",
    "ubscore_checkpoints_total": "counter",
    "ubscore_checkpoint_inputs_total": "counter",
    "ubscore_sink_events_total": "counter",
    "ubscore_sink_batches_total": "counter",
    "ubscore_sink_failures_total": "counter",
    "ubscore_sink_commit_failures_total": "counter",
    "ubscore_sink_skipped_total": "counter",
    "ubscore_http_requests_total": "counter",
    "ubscore_http_connections_dropped_total": "counter",
    "ubscore_sink_paused": "gauge",
    "ubscore_consumer_lag_records": "gauge",
    "ubscore_partitions_owned": "gauge",
    "ubscore_recovery_remaining_records": "gauge",
    "ubscore_http_waiting_requests": "gauge",
    "ubscore_apply_latency_seconds": "histogram",
    "ubscore_sink_latency_seconds": "histogram",
    "ubscore_http_request_duration_seconds": "histogram",
    "ubscore_checkpoint_duration_seconds": "histogram",
    "ubscore_checkpoint_batch_inputs": "histogram",
    "faust_messages_received_total": "counter",
    "faust_total_rebalances": "gauge",
    "faust_total_rebalances_recovering": "gauge",
    "faust_consumer_commit_latency": "histogram",
    "faust_topic_partition_end_offset": "gauge",
    "faust_topic_partition_offset_commited": "gauge",
    "faust_assign_latency": "histogram",
}
#: Labels the catalogue's metrics carry, plus those Prometheus adds to every scraped series.
LABELS = {"kind", "status", "reason", "action", "view", "consumer", "topic", "partition", "le", "instance", "job"}


# --- the extraction, on expressions with known answers -------------------------------------------


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("up", {"up"}),
        ('up{job="ubscore"} == 0', {"up"}),
        ("sum by (consumer) (ubscore_consumer_lag_records)", {"ubscore_consumer_lag_records"}),
        ("sum(ubscore_consumer_lag_records) by (consumer, topic)", {"ubscore_consumer_lag_records"}),
        ('sum(rate(ubscore_http_requests_total{view="submit",status="504"}[5m]))', {"ubscore_http_requests_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))", {"x_bucket"}),
        (
            "histogram_quantile(0.5, sum without (instance) (rate(apply_seconds_bucket[$__rate_interval])))",
            {"apply_seconds_bucket"},
        ),
        ("sum(rate(a_sum[1h30m])) / sum(rate(a_count[1h30m]))", {"a_sum", "a_count"}),
        ("max by (instance) (g) > bool 0 and on (instance) up offset 10m", {"g", "up"}),
        ("a unless ignoring (reason) b or c", {"a", "b", "c"}),
        ("a * on (instance) group_left (consumer) b", {"a", "b"}),
        ("a * on (instance) group_left b", {"a", "b"}),
        ("clamp_min(increase(c_total[5m]), 0) > 1e3", {"c_total"}),
        ("rate(x[5m:30s]) > 0x1F or vector(0)", {"x"}),
        ("sum_over_time(gauge_with_max_in_name[5m]) - Inf + NaN", {"gauge_with_max_in_name"}),
        ('label_replace(a, "dst", "sum by (x) b", "src", "(.*)")', {"a"}),
        ('a{reason=~"rate|sum", view!="submit"} # a comment naming metric_in_comment', {"a"}),
        ('rate(a{instance=~"$instance"}[$__interval]) / ${divisor}', {"a"}),
        ("topk(5, sum by (kind) (rate(ops_total[5m])))", {"ops_total"}),
        ("colon:recorded:rule", {"colon:recorded:rule"}),
    ],
)
def test_metric_names(expression: str, names: set[str]) -> None:
    assert metric_names([expression]) == names


def test_metric_names_of_several_expressions_is_their_union() -> None:
    assert metric_names(["a + b", "sum by (le) (c_bucket)", "up == 0"]) == {"a", "b", "c_bucket", "up"}


def test_label_names() -> None:
    expressions = [
        'sum by (consumer, topic) (lag{consumer="ledger"})',
        'rate(x{view="submit",status!~"2.."}[5m])',
        "a * on (instance) group_left (reason) b",
        'sum without (le) (c{action=~"exit|resume"})',
    ]
    assert label_names(expressions) == {"consumer", "topic", "view", "status", "instance", "reason", "le", "action"}


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("ubscore_apply_latency_seconds_bucket", "ubscore_apply_latency_seconds"),
        ("ubscore_checkpoint_batch_inputs_sum", "ubscore_checkpoint_batch_inputs"),
        ("ubscore_checkpoint_batch_inputs_count", "ubscore_checkpoint_batch_inputs"),
        ("ubscore_operations_total", "ubscore_operations_total"),
        ("ubscore_sink_paused", "ubscore_sink_paused"),
        ("up", "up"),
    ],
)
def test_exported_family(name: str, family: str) -> None:
    assert exported_family(name) == family


RULES_TEXT = """\
groups:
  - name: g
    rules:
      - alert: One
        expr: up{job="ubscore"} == 0
        for: 1m
      - alert: Two
        expr: |
          sum by (consumer) (
            lag
          ) > 10
        for: 5m
      - record: three
        expr: "rate(a_total[5m])"
      - expr: 'b > 0'   # a comment
        alert: Four
      - alert: Five
        expr: c
          > 1
        labels:
          severity: warning
"""


def test_expressions_in_rules_text() -> None:
    assert expressions_in_rules_text(RULES_TEXT) == [
        'up{job="ubscore"} == 0',
        "sum by (consumer) (\nlag\n) > 10",
        "rate(a_total[5m])",
        "b > 0",
        "c > 1",
    ]


def test_an_expression_the_reader_misses_is_an_error() -> None:
    text = RULES_TEXT + "      - alert: Six\n        labels: {}\n"
    with pytest.raises(ValueError, match="6 rules but 5 expressions"):
        expressions_in_rules_text(text)


def test_expressions_in_dashboard_recurse_into_rows() -> None:
    dashboard: Dict[str, Any] = {
        "panels": [
            {"type": "row", "panels": []},
            {"type": "timeseries", "targets": [{"expr": "a"}, {"expr": "b"}]},
            {
                "type": "row",
                "collapsed": True,
                "panels": [{"type": "stat", "targets": [{"expr": "c"}, {"refId": "B"}]}],
            },
            {"type": "text"},
        ]
    }
    assert expressions_in_dashboard(dashboard) == ["a", "b", "c"]


def test_dashboard_rule_file_replaces_grafana_intervals() -> None:
    text = monitoring.dashboard_rule_file(['sum(rate(x{a="b"}[$__rate_interval]))'])
    assert 'expr: "sum(rate(x{a=\\"b\\"}[5m]))"' in text
    assert expressions_in_rules_text(text) == ['sum(rate(x{a="b"}[5m]))']


# --- the names the rules and the dashboard use ---------------------------------------------------


def test_the_rules_are_read_whole() -> None:
    expressions = rule_expressions()
    assert len(expressions) >= 10
    assert 'up{job="ubscore"} == 0' in expressions
    assert all(expression.strip() for expression in expressions)


def _unknown(names: set[str]) -> List[str]:
    """Names that are neither ``up`` nor a sample of a catalogued metric (a histogram's only with a suffix)."""
    unknown = []
    for name in sorted(names):
        family = exported_family(name)
        if name == "up":
            continue
        kind = CATALOGUE.get(family)
        if kind is None or (kind == "histogram") != (family != name):
            unknown.append(name)
    return unknown


def test_unknown_names_are_caught() -> None:
    assert _unknown({"up", "ubscore_operations_total", "ubscore_apply_latency_seconds_bucket"}) == []
    assert _unknown({"ubscore_operations", "ubscore_sink_paused_bucket", "ubscore_apply_latency_seconds"}) == [
        "ubscore_apply_latency_seconds",
        "ubscore_operations",
        "ubscore_sink_paused_bucket",
    ]
    assert _unknown({"ubscore_operations_total_count"}) == ["ubscore_operations_total_count"]


def test_the_rules_use_only_exported_metrics() -> None:
    names = metric_names(rule_expressions())
    assert _unknown(names) == []
    assert {"up", "ubscore_consumer_lag_records", "ubscore_processing_failures_total"} <= names


def test_the_dashboard_uses_only_exported_metrics() -> None:
    names = metric_names(dashboard_expressions())
    assert _unknown(names) == []
    assert {"ubscore_operations_total", "ubscore_apply_latency_seconds_bucket", "faust_total_rebalances"} <= names


def test_the_rules_and_the_dashboard_use_only_known_labels() -> None:
    assert label_names(rule_expressions() + dashboard_expressions()) <= LABELS


def test_every_ubscore_metric_is_on_the_dashboard() -> None:
    """A metric nobody looks at is a blind spot; each of the worker's own shows somewhere."""
    families = {exported_family(name) for name in metric_names(dashboard_expressions())}
    assert sorted(name for name in CATALOGUE if name.startswith("ubscore_") and name not in families) == []


# --- the dashboard itself ------------------------------------------------------------------------


def _query_panels() -> List[Dict[str, Any]]:
    return [panel for panel in monitoring.panels(monitoring.load_dashboard()) if panel.get("type") != "row"]


def test_the_dashboard_loads() -> None:
    dashboard = json.loads(monitoring.DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    assert len(_query_panels()) >= 20


def test_every_panel_queries_the_provisioned_datasource() -> None:
    provisioned = (monitoring.ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert f"uid: {DATASOURCE_UID}\n" in provisioned
    for panel in _query_panels():
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr"), panel["title"]
            assert target.get("datasource", {}).get("uid", DATASOURCE_UID) == DATASOURCE_UID, panel["title"]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in monitoring.panels(monitoring.load_dashboard())]
    assert len(ids) == len(set(ids))


def test_target_ref_ids_are_unique_within_a_panel() -> None:
    for panel in _query_panels():
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
