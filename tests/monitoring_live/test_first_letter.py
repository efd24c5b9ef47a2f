"""Issue 30 in a real Prometheus, without the stack: a reason's first dead letter on a young worker.

A tiny /metrics endpoint serves what a fresh worker serves (its exposition, read
from a process of its own), then the same with one dead letter of reason
``invalid_json`` counted, about two scrapes after Prometheus first saw it. The
server runs alerts.yml at the live pace (tests.monitoring.live_rules). Three cases:

- the project's rules on a fresh worker's series, ``invalid_json`` at 0 from the
  start: the alert fires within its ``for:`` and a few intervals, and resolves once
  the letter has left its range; nothing else fires;
- the same rules on the series as a worker without app.observability.metrics.export_known_series
  served it, born at its first letter with the value 1: silent, for ``increase()``
  has no earlier sample to compare with. This is why every known series starts at 0;
- the rule before issue 30 (its offset branch for a young series) on that series:
  silent too, issue 30's report as it was.

The first case fails with the rule and the series of before issue 30: a first
letter that appears at 1 on a young worker raises nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.monitoring import LIVE_SPEEDUP, alert_timings, fresh_exposition, live_rules, scaled_rules

from .prometheus_server import FEW_INTERVALS_S, INTERVAL_S, FakeTarget, Prometheus, running_prometheus

pytestmark = pytest.mark.timeout(300)

ALERT = "UBSCoreDeadLetters"
REASON = "invalid_json"
#: UBSCoreDeadLetters as docker/prometheus/alerts.yml had it before issue 30.
RULE_BEFORE_ISSUE_30 = """\
groups:
  - name: before-issue-30
    rules:
      - alert: UBSCoreDeadLetters
        expr: |
          sum by (instance, reason) (
              (ubscore_dead_letters_total unless ubscore_dead_letters_total offset 10m)
                and on (instance) (up{job="ubscore"} offset 10m == 1)
            or
              increase(ubscore_dead_letters_total[10m])
          ) > 0
        for: 1m
        labels:
          severity: warning
"""
_LETTERS = re.compile(r"^ubscore_dead_letters_total\{[^\n]*\n", re.MULTILINE)
_ZERO = re.compile(rf'^ubscore_dead_letters_total\{{reason="{REASON}"\}} 0\.0$', re.MULTILINE)
_TYPE = "# TYPE ubscore_dead_letters_total counter\n"


@pytest.fixture(scope="module")
def fresh() -> str:
    return fresh_exposition()


def with_first_letter(exposition: str) -> str:
    """The exposition once the worker dead-lettered its first message of the reason, as app.agents.ubscore counts it."""
    if _ZERO.search(exposition):
        return _ZERO.sub(f'ubscore_dead_letters_total{{reason="{REASON}"}} 1.0', exposition)
    assert _TYPE in exposition, "no dead-letter family in the exposition"
    return exposition.replace(_TYPE, f'{_TYPE}ubscore_dead_letters_total{{reason="{REASON}"}} 1.0\n')


def without_known_series(exposition: str) -> str:
    """The exposition as a worker without export_known_series served it: no dead-letter series before the first."""
    return _LETTERS.sub("", exposition)


def seen_twice(prometheus: Prometheus) -> None:
    """Until the server has scraped the target twice: the worker is young, but not unseen."""
    prometheus.wait_for_query('count_over_time(up{job="ubscore"}[1m]) >= 2', within_s=30)


def test_a_first_letter_after_zero_fires_and_resolves(fresh: str, tmp_path: Path) -> None:
    rules = live_rules()
    timing = alert_timings(rules)[ALERT]
    with FakeTarget(fresh) as worker, running_prometheus(tmp_path, rules, [worker.address]) as prometheus:
        seen_twice(prometheus)
        worker.text = with_first_letter(fresh)
        fired = prometheus.firing_within(timing.for_s + FEW_INTERVALS_S, ALERT, reason=REASON)
        assert fired is not None, f"{ALERT} did not fire within its for: ({timing.for_s} s) and a few intervals"
        assert dict(fired.labels)["instance"] == worker.address
        assert prometheus.resolved_within(timing.window_s + FEW_INTERVALS_S, ALERT, reason=REASON)
        assert {str(alert) for alert in prometheus.fired()} == {str(fired)}, "a fresh worker raised other alerts"


@pytest.mark.parametrize(
    "rules",
    [live_rules(), scaled_rules(RULE_BEFORE_ISSUE_30, LIVE_SPEEDUP)],
    ids=["project-rules", "rule-before-issue-30"],
)
def test_a_series_born_at_its_first_letter_is_invisible(fresh: str, rules: str, tmp_path: Path) -> None:
    timing = alert_timings(rules)[ALERT]
    born = without_known_series(fresh)
    assert f'reason="{REASON}"' not in born
    with FakeTarget(born) as worker, running_prometheus(tmp_path, rules, [worker.address]) as prometheus:
        seen_twice(prometheus)
        worker.text = with_first_letter(born)
        prometheus.wait_for_query(f'ubscore_dead_letters_total{{reason="{REASON}"}} == 1', within_s=10 * INTERVAL_S)
        assert prometheus.firing_within(timing.for_s + FEW_INTERVALS_S, ALERT, reason=REASON) is None
