"""The monitoring assets name only metrics a worker exports, and the dashboard is well formed.

promtool checks the rules' syntax and behaviour (docker/check-monitoring); a
mistyped metric name is valid PromQL, though, and only shows as a silent alert
or an empty panel. So the names are checked here against the catalogue of the
worker's metrics, and the live-scrape test checks them against a real worker.
"""

from __future__ import annotations

import ast
import importlib
import json
from itertools import product
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Set, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.ledger import PROCESSING_FAILED, Status
from app.core.models import EVENT_KINDS
from app.errors import DEAD_LETTER_REASONS
from app.guards.stalls import StallAction
from app.observability import metrics
from tests import monitoring
from tests.monitoring import (
    AlertTiming,
    alert_timings,
    dashboard_expressions,
    duration_ms,
    duration_text,
    exported_family,
    expressions_in_dashboard,
    expressions_in_rules_text,
    fresh_exposition,
    label_names,
    live_config,
    live_rules,
    metric_names,
    rule_expressions,
    scaled_rules,
)

DATASOURCE_UID = "ubscore-prometheus"

#: What a worker exports at /metrics (app/observability/metrics.py and Faust's Prometheus sensor), by type.
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
    "ubscore_coordinator_silence_seconds": "gauge",
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


# --- every known label set at 0 from a worker's start ---------------------------------------------
#
# A series born with its first increment reads as flat to increase(), so an alert on it misses that
# increment (issue 30). The label values each labelled counter must start with are read here from the
# code that produces them, independently of app.observability.metrics' own lists.

Labels = FrozenSet[Tuple[str, str]]
#: The modules whose InvalidOperation reasons can reach balance.operations.dlq (the agent and the readers it calls).
DEAD_LETTER_SOURCES = tuple(
    monitoring.ROOT / path
    for path in (
        "app/core/wire.py",
        "app/core/field_checks.py",
        "app/core/trade_terms.py",
        "app/core/commands.py",
        "app/core/events.py",
        "app/core/legs.py",
        "app/agents/ubscore.py",
    )
)
#: Reasons of those modules that no dead letter carries: events are read by the sink and the verifier only.
NOT_DEAD_LETTERS = {"invalid_event"}


def _callee(call: ast.Call) -> str:
    function = call.func
    return function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")


def _argument(call: ast.Call, function: ast.FunctionDef, parameter: str) -> ast.expr | None:
    index = [argument.arg for argument in function.args.args].index(parameter)
    if index < len(call.args):
        return call.args[index]
    return next((keyword.value for keyword in call.keywords if keyword.arg == parameter), None)


def _constant(tree: ast.Module, name: str) -> str | None:
    """A module's string constant ``name``: assigned at its top level, or imported from another module."""
    value: Any = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and name in {getattr(target, "id", None) for target in node.targets}:
            value = getattr(node.value, "value", None)
        elif isinstance(node, ast.ImportFrom) and node.module and name in {alias.name for alias in node.names}:
            value = getattr(importlib.import_module(node.module), name, None)
    return value if isinstance(value, str) else None


def reasons_raised(paths: Tuple[Path, ...]) -> Tuple[Set[str], List[str]]:
    """Every reason an ``InvalidOperation(field, reason, ...)`` of these modules can carry, and what could not be read.

    A reason is a literal, a module's string constant, a parameter of the function
    that raises (then every literal its callers pass), or ``invalid_{parameter}``
    (likewise); re-raising a caught error's ``.reason`` adds nothing new.
    """
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in paths}
    functions = [
        (path, node) for path, tree in trees.items() for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
    ]
    calls = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.Call)]
    found: Set[str] = set()
    unread: List[str] = []

    def passed(function: ast.FunctionDef, parameter: str) -> List[str]:
        values = []
        for call in (call for call in calls if _callee(call) == function.name):
            value = _argument(call, function, parameter)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                values.append(value.value)
            else:
                unread.append(f"{function.name}({parameter}=...) at line {call.lineno}")
        return values

    for path, function in functions:
        parameters = {argument.arg for argument in function.args.args}
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            if _callee(call) != "InvalidOperation" or len(call.args) < 2:
                continue
            reason = call.args[1]
            if isinstance(reason, ast.Constant):
                found.add(reason.value)
            elif isinstance(reason, ast.Name) and reason.id in parameters:
                found.update(passed(function, reason.id))
            elif isinstance(reason, ast.Name) and _constant(trees[path], reason.id) is not None:
                found.add(str(_constant(trees[path], reason.id)))
            elif isinstance(reason, ast.Attribute) and reason.attr == "reason":
                continue
            elif isinstance(reason, ast.JoinedStr) and _one_parameter(reason, parameters):
                template = "".join(
                    "{}" if isinstance(part, ast.FormattedValue) else str(part.value) for part in reason.values
                )
                found.update(template.format(value) for value in passed(function, _one_parameter(reason, parameters)))
            else:
                unread.append(f"{path.name}:{call.lineno} {ast.unparse(reason)}")
    return found, unread


def _one_parameter(text: ast.JoinedStr, parameters: Set[str]) -> str:
    """The one parameter an f-string interpolates, or "" when it is anything else."""
    holes = [part.value for part in text.values if isinstance(part, ast.FormattedValue)]
    if len(holes) == 1 and isinstance(holes[0], ast.Name) and holes[0].id in parameters:
        return holes[0].id
    return ""


def _web_trees() -> List[ast.AST]:
    return [ast.parse(path.read_text(encoding="utf-8")) for path in sorted((monitoring.ROOT / "app/web").glob("*.py"))]


def counted_views() -> Set[str]:
    """The view names app.web counts answers under (``@counted("submit")``)."""
    return {
        call.args[0].value
        for tree in _web_trees()
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and _callee(call) == "counted" and isinstance(call.args[0], ast.Constant)
    }


def statuses_answered() -> Set[str]:
    """The status codes app.web answers with: its numbers from 200 to 599 (its limits are 100 and 1000)."""
    return {
        str(node.value)
        for tree in _web_trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) is int and 200 <= node.value <= 599
    }


def known_label_values() -> Dict[str, Dict[str, Set[str]]]:
    """Each labelled counter's label values that a worker knows before it counts anything."""
    reasons, _ = reasons_raised(DEAD_LETTER_SOURCES)
    actions = {action.value for action in StallAction}
    return {
        "ubscore_operations_total": {"kind": set(EVENT_KINDS), "status": {status.value for status in Status}},
        "ubscore_dead_letters_total": {"reason": reasons - NOT_DEAD_LETTERS},
        "ubscore_input_stalls_total": {"action": actions},
        "ubscore_recovery_stalls_total": {"action": actions},
        "ubscore_http_requests_total": {"view": counted_views(), "status": statuses_answered()},
        "ubscore_http_connections_dropped_total": {"reason": reasons_dropped()},
    }


def reasons_dropped() -> Set[str]:
    """The reasons app.web.limits gives when it disconnects a client: the first argument of each ``_drop``."""
    tree = ast.parse((monitoring.ROOT / "app/web/limits.py").read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "_drop"
        and isinstance(node.args[0], ast.Constant)
    }


@pytest.fixture(scope="module")
def fresh() -> Dict[str, Dict[Labels, float]]:
    """A fresh worker's samples (its own process: this one's registry holds what other tests counted)."""
    samples: Dict[str, Dict[Labels, float]] = {}
    for family in text_string_to_metric_families(fresh_exposition()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def test_every_counter_is_exported_at_zero_by_a_fresh_worker(fresh: Dict[str, Dict[Labels, float]]) -> None:
    """A labelled counter whose label sets are left to its first increment exports no sample at all here."""
    counters = [name for name, kind in CATALOGUE.items() if kind == "counter"]
    assert [name for name in counters if not fresh.get(name)] == []
    assert {name: values for name in counters for values in fresh[name].values() if values != 0} == {}


def test_a_fresh_worker_exports_every_known_label_set_at_zero(fresh: Dict[str, Dict[Labels, float]]) -> None:
    known = known_label_values()
    labelled = {name for name, kind in CATALOGUE.items() if kind == "counter" and any(fresh[name])}
    assert labelled == set(known), "a labelled counter must say here which label values it knows in advance"
    for name, values in known.items():
        assert all(values.values()), f"{name}: no label values read from the code: {values}"
        expected = {frozenset(zip(values, combination, strict=True)) for combination in product(*values.values())}
        assert sorted(map(sorted, expected - set(fresh[name]))) == [], name
    owned = fresh["ubscore_partitions_owned"]
    assert {owned.get(frozenset({("consumer", consumer)})) for consumer in ("ledger", "sink")} == {0.0}


@pytest.mark.parametrize("role, consumers", [("ledger", {"ledger"}), ("sink", {"sink"})])
def test_a_worker_exports_the_partitions_of_the_consumers_its_role_runs(role: str, consumers: Set[str]) -> None:
    """A ledger-only worker reports no sink partitions, not even at 0 (tests/integration/test_roles.py), and the
    sink alone no ledger ones."""
    exported = {
        sample.labels["consumer"]
        for family in text_string_to_metric_families(fresh_exposition(role))
        for sample in family.samples
        if sample.name == "ubscore_partitions_owned"
    }
    assert exported == consumers


def test_the_dead_letter_reasons_are_those_the_agent_and_its_readers_raise() -> None:
    reasons, unread = reasons_raised(DEAD_LETTER_SOURCES)
    assert unread == [], "reasons this test cannot read; give them a literal or teach reasons_raised"
    assert PROCESSING_FAILED in reasons and "invalid_json" in reasons and "invalid_op_id" in reasons
    assert set(DEAD_LETTER_REASONS) == reasons - NOT_DEAD_LETTERS
    assert len(DEAD_LETTER_REASONS) == len(set(DEAD_LETTER_REASONS))


def test_the_known_views_and_statuses_are_those_of_the_gateway() -> None:
    assert set(metrics.HTTP_VIEWS) == counted_views()
    assert set(metrics.HTTP_STATUSES) == statuses_answered()
    assert {"submit", "health"} <= counted_views() and {"202", "504"} <= statuses_answered()


def test_reasons_raised_reads_every_form_of_reason(tmp_path: Path) -> None:
    source = """
from app.errors import InvalidOperation
from app.core.ledger import PROCESSING_FAILED


def literal():
    raise InvalidOperation(None, "invalid_json", "")


def constant():
    return InvalidOperation(None, PROCESSING_FAILED, "")


def parameter(body, reason):
    raise InvalidOperation("x", reason, "")


def template(value, name):
    raise InvalidOperation(name, f"invalid_{name}", "")


def callers(body):
    parameter(body, "invalid_asset")
    parameter(body, reason="invalid_user_id")
    template(body, "op_id")
    try:
        template(body, "hold_id")
    except InvalidOperation as error:
        raise InvalidOperation("y", error.reason, "") from None


def unreadable(body):
    raise InvalidOperation(None, body["why"], "")
"""
    module = tmp_path / "sample.py"
    module.write_text(source, encoding="utf-8")
    found, unread = reasons_raised((module,))
    assert found == {
        "invalid_json",
        "processing_failed",
        "invalid_asset",
        "invalid_user_id",
        "invalid_op_id",
        "invalid_hold_id",
    }
    assert unread == ["sample.py:33 body['why']"]


# --- the rules and the config at the live tests' pace --------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"), [("0m", 0), ("3s", 3000), ("1m", 60_000), ("1h30m", 5_400_000), ("250ms", 250), ("2d", 172_800_000)]
)
def test_duration_ms(text: str, ms: int) -> None:
    assert duration_ms(text) == ms


def test_duration_ms_refuses_what_is_no_duration() -> None:
    for text in ("", "5", "1.5m", "m", "5 m"):
        with pytest.raises(ValueError):
            duration_ms(text)


def test_duration_text() -> None:
    assert [duration_text(ms) for ms in (0, 3000, 45_000, 1500, 7)] == ["0s", "3s", "45s", "1500ms", "7ms"]


SCALED_TEXT = """\
groups:
  - name: g
    rules:
      - alert: One
        expr: sum(increase(a_total[10m])) > 0 unless b offset 10m
        for: 1m
        annotations:
          description: Rose in the last 10 minutes [10m], for 1m; offset 10m.
      - alert: Two
        expr: |
          rate(c[5m:1m])
            / rate(d[1h30m])
        for: 0m   # at once
      - alert: Three
        expr: e > 0
"""


def test_scaled_rules_divide_only_the_durations_of_for_and_of_expressions() -> None:
    assert scaled_rules(SCALED_TEXT, 20) == SCALED_TEXT.replace(
        "a_total[10m])) > 0 unless b offset 10m", "a_total[30s])) > 0 unless b offset 30s"
    ).replace("for: 1m\n", "for: 3s\n").replace("c[5m:1m]", "c[15s:3s]").replace("d[1h30m]", "d[270s]").replace(
        "for: 0m   #", "for: 0s   #"
    )


def test_alert_timings() -> None:
    assert alert_timings(SCALED_TEXT) == {
        "One": AlertTiming(60.0, 600.0),
        "Two": AlertTiming(0.0, 5400.0),
        "Three": AlertTiming(0.0, 0.0),
    }


def test_the_live_rules_are_the_project_rules_at_the_live_pace() -> None:
    project = alert_timings(monitoring.RULES_FILE.read_text(encoding="utf-8"))
    live = alert_timings(live_rules())
    assert list(live) == list(project) and len(live) >= 12
    for name, timing in project.items():
        assert live[name] == AlertTiming(
            timing.for_s / monitoring.LIVE_SPEEDUP, timing.window_s / monitoring.LIVE_SPEEDUP
        )
    assert live["UBSCoreDeadLetters"] == AlertTiming(3.0, 30.0)


def test_live_config_points_the_project_config_at_the_targets() -> None:
    text = monitoring.PROMETHEUS_CONFIG.read_text(encoding="utf-8")
    config = live_config(text, ["127.0.0.1:6100", "127.0.0.1:6101"], "1s")
    assert "worker:6066" not in config
    assert "          - 127.0.0.1:6100\n          - 127.0.0.1:6101\n" in config
    assert "scrape_interval: 1s" in config and "evaluation_interval: 1s" in config and "scrape_timeout: 1s" in config
    assert "15s" not in config and "10s" not in config and "5s" not in config
    assert "  - alerts.yml\n" in config and "job_name: ubscore" in config


def test_live_config_refuses_a_config_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="prometheus.yml changed"):
        live_config("global:\n  scrape_interval: 15s\n", ["127.0.0.1:1"], "1s")


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
