"""Session fixtures: the local stack must be up (``make test`` starts it); one worker per run."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .harness import CQL_HOSTS, CQL_PORT, Worker, World


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def worker(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    base = tmp_path_factory.mktemp("worker")
    process = Worker(world, base / "data", base / "worker.log").start()
    try:
        process.wait_ready(partitions=8)
        yield process
    finally:
        process.stop()
        print(f"\n--- worker log tail ({process.log_path}) ---\n{process.tail(30)}")


@pytest.fixture(scope="session")
def cql(world: World) -> Iterator[Any]:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    from app.cql import PROTOCOL_VERSION

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
    cluster = Cluster(
        CQL_HOSTS, port=CQL_PORT, protocol_version=PROTOCOL_VERSION, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
    )
    session = cluster.connect()
    try:
        yield session
    finally:
        cluster.shutdown()


def pytest_collection_modifyitems(items: list) -> None:
    """Tests that stop a shared service run last, so no other test sees the outage."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
