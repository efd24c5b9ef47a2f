"""Which worker owns a user (app.web.routing): from the assignment, never from producer metadata."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from yarl import URL

from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import accounts
from app.web import routing


@pytest.fixture()
def assignment(test_app: Any) -> Iterator[Any]:
    """Two workers, the even partitions on one and the odd on the other, as Faust's assignor hands them out."""
    assignor = test_app.assignor
    before = assignor.changelog_distribution
    changelog = accounts.changelog_topic.get_topic_name()
    evens = [p for p in range(settings.partitions) if p % 2 == 0]
    odds = [p for p in range(settings.partitions) if p % 2 == 1]
    assignor.changelog_distribution = {
        "http://127.0.0.1:7001": {changelog: evens},
        "http://127.0.0.1:7002": {changelog: odds},
    }
    yield assignor
    assignor.changelog_distribution = before


def a_user_on(partition: int) -> int:
    return next(u for u in range(1, 10_000) if partition_for(user_key(u), settings.partitions) == partition)


def test_the_owner_is_the_worker_assigned_the_users_partition(
    assignment: Any, test_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust's own router asks the producer's metadata, which aiokafka drops for topics the
    # producer does not send to; the owner must be found without it.
    def no_metadata(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("'NoneType' object is not iterable")

    monkeypatch.setattr(test_app.producer, "key_partition", no_metadata)
    assert routing.owner_of(a_user_on(0)) == URL("http://127.0.0.1:7001")
    assert routing.owner_of(a_user_on(3)) == URL("http://127.0.0.1:7002")


def test_no_owner_while_no_assignment_names_the_partition(test_app: Any) -> None:
    before = test_app.assignor.changelog_distribution
    test_app.assignor.changelog_distribution = {}
    try:
        assert routing.owner_of(a_user_on(2)) is None
    finally:
        test_app.assignor.changelog_distribution = before


def test_a_worker_knows_itself_by_host_and_port() -> None:
    own = URL(settings.canonical_url)
    assert routing.is_local(URL(f"http://{own.host}:{own.port}/"))
    assert not routing.is_local(URL(f"http://{own.host}:{(own.port or 0) + 1}"))
