"""A live worker under load, scraped: lag, latency and the domain counters move, and every metric the alert
rules and the dashboard use is exported (docker/prometheus/alerts.yml, docker/grafana/dashboards/ubscore.json).

A renamed metric would leave an alert silent or a panel empty without any error; the unit test compares the
names with a catalogue, this test with what a real worker serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Dict, List, Set, Tuple

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring import dashboard_expressions, exported_family, metric_names, rule_expressions

from .harness import Worker, fresh_user_id, produce, workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

Samples = Dict[Tuple[str, frozenset], float]
#: Added by Prometheus itself for every scrape target, never by the target.
SYNTHETIC = {"up"}
LOAD_OPS = 4000


def parse(text: str) -> Samples:
    """Every sample of the text format (prometheus_client's own parser), keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: aiohttp.ClientSession, worker: Worker) -> Samples:
    async with http.get(f"{worker.url}/metrics") as response:
        assert response.status == 200
        return parse(await response.text())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items() if sample == name and wanted <= pairs)


def lag_by_consumer(samples: Samples) -> Dict[str, float]:
    lag: Dict[str, float] = defaultdict(float)
    for (name, pairs), value in samples.items():
        if name == "ubscore_consumer_lag_records":
            lag[dict(pairs)["consumer"]] += value
    return lag


async def submit_and_wait(http: aiohttp.ClientSession, worker: Worker, user: int, n: int) -> None:
    body = {"op_id": f"live-{n}", "kind": "deposit", "user_id": user, "asset": 1, "amount": 3}
    async with http.post(f"{worker.url}/operations", params={"wait": "true"}, data=json.dumps(body)) as response:
        assert response.status == 200, await response.text()


async def submit_under_load(http: aiohttp.ClientSession, worker: Worker, user: int, n: int) -> int:
    """Submit and wait as a client does while a backlog drains; the answer's status.

    A wait whose backlog would outlast it may be refused at once (503 ``overloaded``):
    how soon depends on this machine's speed, so either answer is right, and after a
    refusal the client polls the operation's result until it is there.
    """
    body = {"op_id": f"live-{n}", "kind": "deposit", "user_id": user, "asset": 1, "amount": 3}
    async with http.post(f"{worker.url}/operations", params={"wait": "true"}, data=json.dumps(body)) as response:
        status, answer = response.status, await response.json()
    assert status == 200 or (status == 503 and answer["error"] == "overloaded"), (status, answer)
    deadline = time.monotonic() + 120
    while status == 503:
        async with http.get(f"{worker.url}/operations/{user}/live-{n}") as response:
            if response.status == 200:
                break
            assert time.monotonic() < deadline, f"live-{n} was refused under load and never applied"
        await asyncio.sleep(0.5)
    return status


async def test_a_worker_under_load_shows_lag_latency_and_its_counters_moving(worker: Worker) -> None:
    messages = workload(LOAD_OPS, 300, seed=11, faults=True, orders=False)
    topic = worker.world.topic("balance.operations")
    async with aiohttp.ClientSession() as http:
        before = await scrape(http, worker)
        load = asyncio.ensure_future(produce(topic, messages))
        peaks: Dict[str, float] = defaultdict(float)
        user, n = fresh_user_id(), 0
        answers: Dict[int, int] = defaultdict(int)
        while not load.done():
            n += 1
            answers[await submit_under_load(http, worker, user, n)] += 1  # a client waiting while the load runs
            for consumer, lag in lag_by_consumer(await scrape(http, worker)).items():
                peaks[consumer] = max(peaks[consumer], lag)
            await asyncio.sleep(0.2)
        await load
        deadline = time.monotonic() + 90
        while True:  # the backlog drains: the lag the worker reports falls back to nothing
            during = await scrape(http, worker)
            for consumer, lag in lag_by_consumer(during).items():
                peaks[consumer] = max(peaks[consumer], lag)
            if all(lag == 0 for lag in lag_by_consumer(during).values()) and peaks["sink"] > 0:
                break
            assert time.monotonic() < deadline, f"lag did not drain: {dict(lag_by_consumer(during))}"
            await asyncio.sleep(0.5)
        after = await scrape(http, worker)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert peaks["ledger"] > 0 and peaks["sink"] > 0, f"lag never rose under load: {dict(peaks)}"
    assert set(lag_by_consumer(after)) == {"ledger", "sink"}
    assert total(after, "ubscore_partitions_owned", consumer="ledger") == 8
    assert total(after, "ubscore_partitions_owned", consumer="sink") == 8
    applied = moved("ubscore_checkpoint_inputs_total")
    assert applied >= LOAD_OPS
    assert moved("ubscore_apply_latency_seconds_count") == applied  # every input timed
    assert moved("ubscore_apply_latency_seconds_sum") > 0
    assert moved("ubscore_sink_latency_seconds_count") >= LOAD_OPS
    assert moved("ubscore_sink_events_total") >= LOAD_OPS
    for status, count in answers.items():
        assert moved("ubscore_http_request_duration_seconds_count", view="submit", status=str(status)) == count
        assert moved("ubscore_http_requests_total", view="submit", status=str(status)) == count
    assert moved("ubscore_checkpoint_duration_seconds_count") == moved("ubscore_checkpoints_total") > 0
    assert moved("ubscore_checkpoint_batch_inputs_sum") == applied
    assert moved("ubscore_operations_total", kind="deposit", status="accepted") >= 600
    assert moved("ubscore_operations_total", status="rejected") > 0
    assert moved("ubscore_dead_letters_total") > 0  # the workload's poison messages
    assert moved("ubscore_duplicates_total") > 0  # and its client retries
    assert moved("faust_messages_received_total") >= LOAD_OPS  # Faust's own sensor


async def test_every_metric_the_alerts_and_the_dashboard_use_is_exported(worker: Worker) -> None:
    used = metric_names(rule_expressions()) | metric_names(dashboard_expressions())
    assert len(used) > 10
    poison = (b"1", b"{not json")  # a dead letter: that counter's series exists from the first one
    await produce(worker.world.topic("balance.operations"), [poison])
    async with aiohttp.ClientSession() as http:
        await submit_and_wait(http, worker, fresh_user_id(), 0)  # the HTTP series too
        deadline = time.monotonic() + 30
        while total(await scrape(http, worker), "ubscore_dead_letters_total", reason="invalid_json") == 0:
            assert time.monotonic() < deadline, "the poison message was not dead-lettered"
            await asyncio.sleep(0.2)
        exported: Set[str] = {name for name, _ in await scrape(http, worker)}
    missing: List[str] = sorted(name for name in used - SYNTHETIC if name not in exported)
    assert not missing, f"used by the rules or the dashboard, not exported by a worker: {missing}"
    families = {exported_family(name) for name in exported}
    assert all(exported_family(name) in families for name in used - SYNTHETIC)
