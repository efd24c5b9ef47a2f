"""The PromQL of the alert rules and of the Grafana dashboard, and the metric names it uses.

The rules and the dashboard name metrics by hand; a renamed or mistyped metric
would leave a panel empty or an alert silent without any error. The unit test
checks these names against the catalogue of exported metrics, and a live-scrape
test checks them against a real worker's /metrics, so both read them from here.

The rule file is read without a YAML library (the project does not depend on
one): only the ``expr:`` forms the file uses are accepted, anything else raises.
``python -m tests.monitoring --dashboard-rules`` prints the dashboard's queries as
a rule file, so that docker/check-monitoring can have promtool parse each one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "docker" / "prometheus" / "alerts.yml"
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
    if argv != ["--dashboard-rules"]:
        sys.stderr.write("usage: python -m tests.monitoring --dashboard-rules\n")
        return 2
    sys.stdout.write(dashboard_rule_file(dashboard_expressions()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
