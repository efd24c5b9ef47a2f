"""The PromQL of the alert rules and of the Grafana dashboard, and the metric names it uses.

The rules and the dashboard name metrics by hand; a renamed or mistyped metric
would leave a panel empty or an alert silent without any error. The unit test
checks these names against the catalogue of exported metrics, and a live-scrape
test checks them against a real worker's /metrics, so both read them from here.

The rule file is read without a YAML library (the project does not depend on
one): only the ``expr:`` forms the file uses are accepted, anything else raises.
``python -m tests.monitoring --dashboard-rules`` prints the dashboard's queries as
a rule file, so that docker/check-monitoring can have promtool parse each one.

The tests that run the rules in a real Prometheus (tests/monitoring_live) cannot
wait the rules' minutes: ``live_rules`` is a copy of alerts.yml with every
``for:``, range and offset divided by ``LIVE_SPEEDUP``, the same expressions
otherwise (``--live-rules`` prints it, for promtool), and ``live_config`` the
project's prometheus.yml pointed at given targets with short intervals.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "docker" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
#: How many times faster than written the live tests run the rules: 1m of ``for:`` is 3 s, a 15m range 45 s.
LIVE_SPEEDUP = 20
DASHBOARD_FILE = ROOT / "docker" / "grafana" / "dashboards" / "ubscore.json"

#: Words of PromQL that look like metric names: aggregations, operators, modifiers, literals.
KEYWORDS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
        "quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
    }
)  # fmt: skip
#: Suffixes of a histogram's samples; a counter's sample keeps its ``_total``.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")

_EXPR_KEY = re.compile(r"^(?P<key_column>\s*(?:-\s+)?)expr:\s*(?P<value>.*)$")
_RULE_KEY = re.compile(r"^\s*(?:-\s+)?(?:alert|record):")
_BLOCK_INDICATOR = re.compile(r"^[|>][+-]?(?:\s+#.*)?$")
_QUOTED_SCALAR = re.compile(r"""^(?:(?P<double>"(?:[^"\\]|\\.)*")|(?P<single>'(?:[^']|'')*'))\s*(?:#.*)?$""")


def _dissect(expression: str) -> Tuple[str, Set[str]]:
    """The expression with strings, ranges, matchers and label lists cut out; the label names those held.

    What remains has identifiers only where PromQL has metric names,
    functions, keywords and numbers, which ``metric_names`` tells apart.
    """
    text = _STRING.sub('""', expression)
    text = _COMMENT.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _RANGE.sub(" ", text)
    labels: Set[str] = set()
    for matchers in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(matchers))
    text = _MATCHERS.sub(" ", text)
    for names in _GROUPING.findall(text):
        labels.update(name.strip() for name in names.split(",") if name.strip())
    text = _GROUPING.sub(" ", text)
    return text, labels


def metric_names(expressions: Iterable[str]) -> Set[str]:
    """Every metric name the expressions select, as written (``x_bucket``, ``x_total``)."""
    names: Set[str] = set()
    for expression in expressions:
        text, _ = _dissect(expression)
        for identifier, call in _IDENTIFIER.findall(text):
            if call or identifier.lower() in KEYWORDS:
                continue
            names.add(identifier)
    return names


def label_names(expressions: Iterable[str]) -> Set[str]:
    """Every label name the expressions match on or group by (``le`` included)."""
    labels: Set[str] = set()
    for expression in expressions:
        labels |= _dissect(expression)[1]
    return labels


def exported_family(name: str) -> str:
    """The metric family a sample name belongs to: a histogram's samples map to the histogram's name.

    A counter's sample is its ``_total`` name, which is the name the catalogue
    and prometheus_client's constructor use, so it is returned unchanged.
    """
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _block_scalar(lines: List[str], start: int, key_indent: int) -> Tuple[str, int]:
    """The more-indented lines after ``start`` (a block or multi-line plain scalar) and the next line's index."""
    taken: List[str] = []
    index = start
    while index < len(lines):
        line = lines[index]
        if line.strip() and len(line) - len(line.lstrip()) <= key_indent:
            break
        taken.append(line.strip())
        index += 1
    return "\n".join(taken).strip(), index


def _plain_scalar(value: str) -> str:
    """A one-line YAML scalar: quotes removed, a trailing comment dropped."""
    quoted = _QUOTED_SCALAR.match(value)
    if quoted is not None:
        double, single = quoted.group("double"), quoted.group("single")
        return str(json.loads(double)) if double is not None else single[1:-1].replace("''", "'")
    if value[:1] in "\"'{[&*!%@`":
        raise ValueError(f"expr form not understood: {value!r}")
    return re.sub(r"\s+#.*$", "", value)


def expressions_in_rules_text(text: str) -> List[str]:
    """The ``expr`` of every rule of a Prometheus rule file, in order."""
    lines = text.splitlines()
    expressions: List[str] = []
    index = 0
    while index < len(lines):
        match = _EXPR_KEY.match(lines[index])
        index += 1
        if match is None:
            continue
        key_indent = len(match.group("key_column"))
        value = match.group("value").strip()
        if _BLOCK_INDICATOR.match(value):
            expression, index = _block_scalar(lines, index, key_indent)
        else:
            continuation, index = _block_scalar(lines, index, key_indent)
            expression = " ".join(part for part in (_plain_scalar(value), continuation) if part)
        if not expression:
            raise ValueError(f"empty expr at line {index}")
        expressions.append(expression)
    rules = sum(1 for line in lines if _RULE_KEY.match(line))
    if rules != len(expressions):
        raise ValueError(f"{rules} rules but {len(expressions)} expressions were read")
    return expressions


def rule_expressions() -> list[str]:
    """The expression of every alert rule in docker/prometheus/alerts.yml."""
    return expressions_in_rules_text(RULES_FILE.read_text(encoding="utf-8"))


def panels(container: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every panel of a dashboard, rows included, and the panels inside rows (collapsed rows hold theirs)."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def expressions_in_dashboard(dashboard: Dict[str, Any]) -> List[str]:
    """The ``expr`` of every target of every panel, in the dashboard's order."""
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", []) if "expr" in target]


def load_dashboard() -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return data


def dashboard_expressions() -> list[str]:
    """The expression of every target of docker/grafana/dashboards/ubscore.json."""
    return expressions_in_dashboard(load_dashboard())


def dashboard_rule_file(expressions: Iterable[str]) -> str:
    """A rule file with one recording rule per expression, Grafana's variables replaced by durations."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expression in enumerate(expressions, start=1):
        promql = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expression)
        lines.append(f"      - record: dashboard_query_{number}")
        lines.append(f"        expr: {json.dumps(promql)}")
    return "\n".join(lines) + "\n"


# --- the rules and the config at the live tests' pace ------------------------------------------------

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_FOR_KEY = re.compile(rf"^(?P<key>\s*for:\s*)(?P<duration>{_DURATION})(?P<rest>\s*(?:#.*)?)$")
_RANGE_DURATION = re.compile(rf"\[(?P<range>{_DURATION})(?P<colon>:(?P<step>{_DURATION})?)?\]")
_OFFSET = re.compile(rf"\boffset\s+-?(?P<duration>{_DURATION})\b")
_RULE_NAME = re.compile(r"^\s*(?:-\s+)?(?:alert|record):\s*(?P<name>\S+)")
_INTERVAL_KEY = re.compile(
    r"^(?P<key>[ \t]*(?:scrape_interval|evaluation_interval|scrape_timeout):\s*)\S+", re.MULTILINE
)
_COMPOSE_TARGET = re.compile(r"^(?P<indent>[ \t]*)- worker:6066[ \t]*$", re.MULTILINE)


def duration_ms(text: str) -> int:
    """A Prometheus duration (``1h30m``, ``500ms``) in milliseconds."""
    if re.fullmatch(_DURATION, text) is None:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(count) * _UNIT_MS[unit] for count, unit in _DURATION_PART.findall(text))


def duration_text(ms: int) -> str:
    """Milliseconds as a Prometheus duration, in whole seconds when they are whole."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _faster(duration: str, speedup: float) -> str:
    return duration_text(round(duration_ms(duration) / speedup))


def _faster_promql(text: str, speedup: float) -> str:
    def selector(match: re.Match[str]) -> str:
        step = match.group("step")
        colon = "" if match.group("colon") is None else ":" + ("" if step is None else _faster(step, speedup))
        return f"[{_faster(match.group('range'), speedup)}{colon}]"

    def offset(match: re.Match[str]) -> str:
        duration = match.group("duration")
        return match.group(0)[: -len(duration)] + _faster(duration, speedup)

    return _OFFSET.sub(offset, _RANGE_DURATION.sub(selector, text))


def scaled_rules(text: str, speedup: float) -> str:
    """A rule file running ``speedup`` times faster: ``for:``, ranges and offsets divided, nothing else touched.

    The expressions' ranges shrink with their ``for:``, so each alert keeps its
    shape (an increase over 10 minutes, held 1 minute, is one over 30 s held 3 s
    at 20 times); only an expression's text (the lines of its ``expr``) is
    rewritten, never an annotation that happens to say "[5m]".
    """
    lines = text.splitlines(keepends=True)
    out: List[str] = []
    expr_indent = None  # the indent of the expr key whose value is being read, if any
    for line in lines:
        body = line.rstrip("\n")
        indent = len(body) - len(body.lstrip())
        if expr_indent is not None and body.strip() and indent <= expr_indent:
            expr_indent = None
        expr = _EXPR_KEY.match(body)
        if expr is not None:
            expr_indent = len(expr.group("key_column"))
        if expr_indent is not None:
            out.append(_faster_promql(line, speedup))
            continue
        key = _FOR_KEY.match(body)
        if key is not None:
            line = f"{key.group('key')}{_faster(key.group('duration'), speedup)}{key.group('rest')}\n"
        out.append(line)
    return "".join(out)


def live_rules() -> str:
    """The project's alerts.yml at the live tests' pace (``LIVE_SPEEDUP``)."""
    return scaled_rules(RULES_FILE.read_text(encoding="utf-8"), LIVE_SPEEDUP)


@dataclass(frozen=True)
class AlertTiming:
    """How long an alert's condition must hold, and the longest range its expression reads (0: none)."""

    for_s: float
    window_s: float


def alert_timings(text: str) -> Dict[str, AlertTiming]:
    """Each rule's timing, by name; a rule's ``for:`` follows its ``alert:`` key, as in alerts.yml."""
    names: List[str] = []
    holds: Dict[str, float] = {}
    for line in text.splitlines():
        rule = _RULE_NAME.match(line)
        if rule is not None:
            names.append(rule.group("name"))
        key = _FOR_KEY.match(line)
        if key is not None and names:
            holds[names[-1]] = duration_ms(key.group("duration")) / 1000
    timings: Dict[str, AlertTiming] = {}
    for name, expression in zip(names, expressions_in_rules_text(text), strict=True):
        ranges = [duration_ms(match.group("range")) / 1000 for match in _RANGE_DURATION.finditer(expression)]
        timings[name] = AlertTiming(holds.get(name, 0.0), max(ranges, default=0.0))
    return timings


def live_config(text: str, targets: Sequence[str], interval: str) -> str:
    """prometheus.yml scraping ``targets`` and evaluating its rules every ``interval`` (a duration).

    The project's own file, so that a change to its job or rule files reaches the
    live tests; only its intervals and its compose target are replaced, and a file
    without them is refused rather than half rewritten.
    """
    config, intervals = _INTERVAL_KEY.subn(lambda match: match.group("key") + interval, text)
    lines = lambda match: "\n".join(f"{match.group('indent')}- {target}" for target in targets)  # noqa: E731
    config, replaced = _COMPOSE_TARGET.subn(lines, config)
    if intervals < 2 or replaced != 1:
        raise ValueError(f"{intervals} intervals and {replaced} targets replaced: prometheus.yml changed its form")
    return config


# --- a fresh worker's metrics ---------------------------------------------------------------------

#: What a worker's process runs before its web server can answer: the whole app imported, as `ubscore worker`.
_DUMP_FRESH_WORKER = (
    "import sys, app.worker; from prometheus_client import REGISTRY, generate_latest; "
    "sys.stdout.write(generate_latest(REGISTRY).decode())"
)


def fresh_exposition(role: str = "all") -> str:
    """What a worker of ``role`` serves at /metrics before it has handled anything, from a process of its own.

    prometheus_client's registry is the process's: only a new process shows what
    a worker starts with, untouched by what other tests counted.
    """
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "UBS_ROLE": role, "UBS_STORE": "memory://", "UBS_DATA_DIR": data}
        done = subprocess.run(
            [sys.executable, "-c", _DUMP_FRESH_WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    if done.returncode != 0:
        raise RuntimeError(f"a fresh worker's metrics could not be read:\n{done.stderr[-3000:]}")
    return done.stdout


def main(argv: List[str]) -> int:
    if argv == ["--dashboard-rules"]:
        sys.stdout.write(dashboard_rule_file(dashboard_expressions()))
    elif argv == ["--live-rules"]:
        sys.stdout.write(live_rules())
    else:
        sys.stderr.write("usage: python -m tests.monitoring --dashboard-rules | --live-rules\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
