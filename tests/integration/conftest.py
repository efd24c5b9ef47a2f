"""Session fixtures: the local stack must be up (``make test`` starts it); one worker per run."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .harness import CQL_SETTINGS, SECURE_HOME, Worker, World, ready_worker


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def worker(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with ready_worker(world, tmp_path_factory.mktemp("worker")) as process:
        yield process


@pytest.fixture(scope="session")
def cql(world: World) -> Iterator[Any]:
    from app.sink.cql import new_cluster

    cluster = new_cluster(CQL_SETTINGS)
    session = cluster.connect()
    try:
        yield session
    finally:
        cluster.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Tests that stop a shared service run last, so no other test sees the outage; the secured
    stack's own tests are left out unless the run is on it (SECURE_HOME, ``make test-secure``)."""
    if SECURE_HOME is None:
        secured = [item for item in items if item.get_closest_marker("secured") is not None]
        if secured:
            config.hook.pytest_deselected(items=secured)
            items[:] = [item for item in items if item.get_closest_marker("secured") is None]
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
