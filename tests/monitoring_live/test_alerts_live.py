"""Each alert that one machine can provoke, provoked on a live worker and judged by a real Prometheus.

A fresh worker of its own per test (tests/integration/harness.py), ready before
Prometheus starts scraping it, every second, with docker/prometheus/alerts.yml at
the live pace (tests.monitoring.live_rules: 20 times faster, ranges and ``for:``
alike). Each test makes one thing happen the way it happens in production, waits
until the worker's own /metrics shows it, and then requires the alert to fire
within its ``for:`` plus a few intervals, to resolve once the cause is gone
(within its range plus a few intervals for an alert on an ``increase()``), and no
alert but the expected ones to fire:

- a first dead letter on a fresh worker (issue 30): one line that is not JSON;
- a refused leg: one on balance.credits that is not JSON (UBSCoreLegRefused);
- a processing failure: ``UBS_FAILPOINT=raise_in_decision``, as test_decision_failure;
- a worker down: stopped, then started again on its port;
- ledger lag: the input paused inside Faust (``UBS_FAILPOINT=stall_input``, as
  test_stall) under a backlog, until the progress watch resumes it, which raises
  UBSCoreInputStall too;
- the sink paused: the CQL database stopped and started, as test_database_outage
  (disruptive: last);
- and a healthy idle worker raises nothing over the longest span an alert is given.

Left out: UBSCoreSinkLagHigh and UBSCoreResultTimeouts need minutes of load,
UBSCoreCreditParked an account at 2^63-1, UBSCoreApplyLatencyHigh a slow machine,
UBSCoreRecoveryStall a recovery held (test_recovery_stall); promtool's fixtures
cover them. Run by ``make monitoring-check`` with the stack up (docs/monitoring.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Set, Tuple

import aiohttp
import pytest

from tests.integration.harness import PARTITIONS, Worker, World, produce, produce_paced, workload
from tests.integration.test_database_outage import stack
from tests.integration.test_metrics import Samples, lag_by_consumer, scrape, total
from tests.monitoring import alert_timings, expressions_in_rules_text, live_rules

from .prometheus_server import FEW_INTERVALS_S, INTERVAL_S, Alert, Prometheus, running_prometheus

# Above the sum of the bounded waits inside, so those fail first with their own message (pytest-timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RULES = live_rules()
TIMING = alert_timings(RULES)
EXPRESSIONS = dict(zip(TIMING, expressions_in_rules_text(RULES), strict=True))
#: The longest an alert is given to fire and resolve: the span over which an idle worker must raise nothing.
SPAN_S = max(timing.for_s + timing.window_s for timing in TIMING.values()) + FEW_INTERVALS_S
NOT_JSON = (b"1", b"{not json")
#: UBS_STALL_S of the lag test: the paused input is resumed after it, well after the lag alert had time to fire.
LAG_STALL_S = 90.0
BACKLOG_RATE = 50_000.0


def threshold(name: str) -> float:
    """The number an alert's expression compares with (``... > 10000``)."""
    found = re.search(r">\s*([0-9.]+)\s*$", EXPRESSIONS[name])
    assert found is not None, EXPRESSIONS[name]
    return float(found.group(1))


def instance(worker: Worker) -> str:
    """The ``instance`` label Prometheus gives the worker's series: its scrape address."""
    return f"127.0.0.1:{worker.port}"


@contextlib.asynccontextmanager
async def watched(tmp_path: Path, **env: str) -> AsyncIterator[Tuple[Worker, Prometheus]]:
    """A fresh ready worker, and a Prometheus that has scraped it once; both stopped after."""
    worker = Worker(World(), tmp_path / "data", tmp_path / "worker.log", extra_env=env).start()
    try:
        await asyncio.to_thread(worker.wait_ready, PARTITIONS)
        with running_prometheus(tmp_path / "prometheus", RULES, [instance(worker)]) as prometheus:
            await asyncio.to_thread(prometheus.wait_for_query, f'up{{instance="{instance(worker)}"}} == 1', 30)
            yield worker, prometheus
    finally:
        worker.stop()
        print(f"\n--- worker log tail ({worker.log_path}) ---\n{worker.tail(30)}")


async def shows(worker: Worker, condition: Callable[[Samples], bool], within_s: float, what: str) -> float:
    """When the worker's own /metrics first shows ``condition``: the cause, as Prometheus can see it next."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                if condition(await scrape(http, worker)):
                    return time.monotonic()
            assert time.monotonic() < deadline, f"{what} not seen in {within_s:.0f} s; log:\n{worker.tail()}"
            await asyncio.sleep(INTERVAL_S / 4)


async def answers(worker: Worker, within_s: float) -> float:
    """When the worker's /metrics first answers (a restarted worker serves it before it is ready)."""
    return await shows(worker, lambda samples: True, within_s, "a /metrics answer")


async def fires(prometheus: Prometheus, since: float, name: str, **labels: str) -> Alert:
    """The alert, firing within its ``for:`` and a few intervals of ``since``, when the worker showed the cause."""
    left = since + TIMING[name].for_s + FEW_INTERVALS_S - time.monotonic()
    alert = await asyncio.to_thread(prometheus.firing_within, max(0.0, left), name, **labels)
    if alert is None:
        listed = ", ".join(f"{other} {other.state}" for other in prometheus.alerts()) or "none"
        pytest.fail(f"{name} {labels} did not fire within {TIMING[name].for_s} s + a few intervals; listed: {listed}")
    return alert


async def resolves(prometheus: Prometheus, since: float, name: str, **labels: str) -> None:
    """The alert gone within its range and a few intervals of ``since``, when the cause was last seen."""
    left = since + TIMING[name].window_s + FEW_INTERVALS_S - time.monotonic()
    gone = await asyncio.to_thread(prometheus.resolved_within, max(0.0, left), name, **labels)
    assert gone, f"{name} {labels} still listed {TIMING[name].window_s} s + a few intervals after its cause ended"


def only(prometheus: Prometheus, expected: Set[str]) -> None:
    """No alert but the expected ones fired since Prometheus started."""
    others = sorted(str(alert) for alert in prometheus.fired() if alert.name not in expected)
    assert others == [], f"alerts fired that this cause does not explain: {others}"


async def test_a_healthy_idle_worker_raises_nothing(tmp_path: Path) -> None:
    async with watched(tmp_path) as (_, prometheus):
        fired = await asyncio.to_thread(prometheus.watch, SPAN_S)
    assert sorted(map(str, fired)) == []


async def test_a_first_dead_letter_on_a_fresh_worker_fires_and_resolves(tmp_path: Path) -> None:
    async with watched(tmp_path) as (worker, prometheus):
        series = f'ubscore_dead_letters_total{{instance="{instance(worker)}",reason="invalid_json"}}'
        await asyncio.to_thread(prometheus.wait_for_query, f"{series} == 0", 30)  # a young series, at 0
        await produce(worker.world.topic("balance.operations"), [NOT_JSON])
        letter = await shows(
            worker, lambda s: total(s, "ubscore_dead_letters_total", reason="invalid_json") == 1, 60, "the dead letter"
        )
        await fires(prometheus, letter, "UBSCoreDeadLetters", instance=instance(worker), reason="invalid_json")
        await resolves(prometheus, letter, "UBSCoreDeadLetters", instance=instance(worker), reason="invalid_json")
        only(prometheus, {"UBSCoreDeadLetters"})


async def test_a_refused_leg_fires_at_once_and_resolves(tmp_path: Path) -> None:
    async with watched(tmp_path) as (worker, prometheus):
        await produce(worker.world.topic("balance.credits"), [NOT_JSON])
        refused = await shows(worker, lambda s: total(s, "ubscore_legs_refused_total") == 1, 60, "the refused leg")
        await fires(prometheus, refused, "UBSCoreLegRefused", instance=instance(worker))
        await fires(prometheus, refused, "UBSCoreDeadLetters", instance=instance(worker), reason="invalid_json")
        await resolves(prometheus, refused, "UBSCoreLegRefused", instance=instance(worker))
        only(prometheus, {"UBSCoreLegRefused", "UBSCoreDeadLetters"})


async def test_a_processing_failure_fires_and_resolves(tmp_path: Path) -> None:
    async with watched(tmp_path, UBS_FAILPOINT="raise_in_decision:3") as (worker, prometheus):
        await produce(worker.world.topic("balance.operations"), workload(ops=20, users=4, seed=53))
        failed = await shows(worker, lambda s: total(s, "ubscore_processing_failures_total") == 1, 60, "the failure")
        await fires(prometheus, failed, "UBSCoreProcessingFailures", instance=instance(worker))
        await fires(prometheus, failed, "UBSCoreDeadLetters", instance=instance(worker), reason="processing_failed")
        await resolves(prometheus, failed, "UBSCoreProcessingFailures", instance=instance(worker))
        only(prometheus, {"UBSCoreProcessingFailures", "UBSCoreDeadLetters"})


async def test_a_worker_down_fires_and_resolves_when_it_is_back(tmp_path: Path) -> None:
    async with watched(tmp_path) as (worker, prometheus):
        await asyncio.to_thread(worker.stop)
        down = time.monotonic()
        await fires(prometheus, down, "UBSCoreWorkerDown", instance=instance(worker))
        again = Worker(worker.world, worker.data_dir, worker.log_path, port=worker.port).start()
        try:
            back = await answers(again, 120)
            await resolves(prometheus, back, "UBSCoreWorkerDown", instance=instance(worker))
            await asyncio.to_thread(again.wait_ready, PARTITIONS)
        finally:
            again.stop()
        only(prometheus, {"UBSCoreWorkerDown"})


async def test_a_backlog_on_a_paused_ledger_fires_lag_then_the_stall_and_resolves(tmp_path: Path) -> None:
    env = {"UBS_FAILPOINT": "stall_input:50", "UBS_STALL_S": str(LAG_STALL_S)}
    lag = threshold("UBSCoreLedgerLagHigh")
    async with watched(tmp_path, **env) as (worker, prometheus):
        topic = worker.world.topic("balance.operations")
        await produce(topic, workload(ops=100, users=30, seed=57))
        deadline = time.monotonic() + 60
        while "failpoint name=stall_input" not in worker.log_path.read_text():
            assert time.monotonic() < deadline, f"the failpoint never fired; log:\n{worker.tail()}"
            await asyncio.sleep(0.2)
        await produce_paced(topic, workload(ops=int(lag * 1.5), users=200, seed=58, orders=False), BACKLOG_RATE)

        over = await shows(worker, lambda s: lag_by_consumer(s)["ledger"] > lag, 60, f"a ledger lag over {lag:.0f}")
        await fires(prometheus, over, "UBSCoreLedgerLagHigh", consumer="ledger")
        resumed = await shows(
            worker, lambda s: total(s, "ubscore_input_stalls_total", action="resume") >= 1, LAG_STALL_S + 60, "a resume"
        )
        await fires(prometheus, resumed, "UBSCoreInputStall", instance=instance(worker), action="resume")
        caught_up = await shows(worker, lambda s: lag_by_consumer(s)["ledger"] <= lag, 180, "the backlog applied")
        await resolves(prometheus, caught_up, "UBSCoreLedgerLagHigh", consumer="ledger")
        # The backlog's records waited in Kafka for the whole pause: their apply latency may be over 2 s long enough.
        only(prometheus, {"UBSCoreLedgerLagHigh", "UBSCoreInputStall", "UBSCoreApplyLatencyHigh"})


@pytest.mark.disruptive
async def test_a_database_outage_fires_sink_paused_and_resolves(tmp_path: Path) -> None:
    async with watched(tmp_path) as (worker, prometheus):
        await asyncio.to_thread(stack, "down", "cassandra")
        try:
            await produce(worker.world.topic("balance.operations"), workload(ops=50, users=5, seed=59))
            paused = await shows(worker, lambda s: total(s, "ubscore_sink_paused") == 1, 120, "the sink paused")
            await fires(prometheus, paused, "UBSCoreSinkPaused", instance=instance(worker))
        finally:
            await asyncio.to_thread(stack, "up", "cassandra")
        resumed = await shows(worker, lambda s: total(s, "ubscore_sink_paused") == 0, 300, "the sink resumed")
        await resolves(prometheus, resumed, "UBSCoreSinkPaused", instance=instance(worker))
        only(prometheus, {"UBSCoreSinkPaused"})
