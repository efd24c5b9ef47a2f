"""How app.sink.cql.new_cluster opens the database: login, TLS, local datacenter, consistency, keyspace.

Nothing here connects: the driver's Cluster opens connections at ``connect()``.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, Iterator, List

import pytest
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.policies import HostDistance, SimpleConvictionPolicy, TokenAwarePolicy
from cassandra.pool import Host
from cassandra.query import dict_factory, named_tuple_factory

from app.settings import load
from app.sink import cql
from app.sink.cql import keyspace_replication, new_cluster
from tests.unit.conftest import Pem

PASSWORD = "cql-password-456"


@pytest.fixture()
def cluster_of() -> Iterator[Any]:
    """``new_cluster`` over settings read from an environment; each cluster made is shut down after the test."""
    made = []

    def build(env: Dict[str, str], **options: Any) -> Any:
        made.append(new_cluster(load(env), **options))
        return made[-1]

    yield build
    for cluster in made:
        cluster.shutdown()


def test_the_default_works_against_the_one_local_node(cluster_of: Any) -> None:
    cluster = cluster_of({})
    profile = cluster.profile_manager.default
    assert (cluster.contact_points, cluster.port) == (["127.0.0.1"], 9042)
    assert cluster.auth_provider is None and cluster.ssl_context is None
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert isinstance(profile.load_balancing_policy, TokenAwarePolicy)
    assert profile.row_factory is named_tuple_factory
    assert keyspace_replication(load({})) == "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def test_a_login_tls_a_local_datacenter_and_a_consistency_are_all_used(cluster_of: Any, pem: Pem) -> None:
    env = {
        "UBS_CQL_HOSTS": "10.0.0.1,10.0.0.2",
        "UBS_CQL_PORT": "9142",
        "UBS_CQL_USERNAME": "ubscore",
        "UBS_CQL_PASSWORD": PASSWORD,
        "UBS_CQL_SSL_CAFILE": str(pem.cert),
        "UBS_CQL_LOCAL_DC": "eu-west-1",
        "UBS_CQL_CONSISTENCY": "QUORUM",
    }
    cluster = cluster_of(env, request_timeout_s=60, rows_as_dicts=True)
    profile = cluster.profile_manager.default
    assert (cluster.contact_points, cluster.port) == (["10.0.0.1", "10.0.0.2"], 9142)
    assert isinstance(cluster.auth_provider, PlainTextAuthProvider)
    assert (cluster.auth_provider.username, cluster.auth_provider.password) == ("ubscore", PASSWORD)
    assert profile.consistency_level == ConsistencyLevel.QUORUM
    assert (profile.request_timeout, profile.row_factory) == (60, dict_factory)
    local = Host("10.0.0.1", SimpleConvictionPolicy, datacenter="eu-west-1", rack="a")
    remote = Host("10.1.0.1", SimpleConvictionPolicy, datacenter="us-east-1", rack="a")
    assert profile.load_balancing_policy.distance(local) == HostDistance.LOCAL
    assert profile.load_balancing_policy.distance(remote) == HostDistance.IGNORED
    context = cluster.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname  # nodes are reached by the addresses the cluster reports
    assert [dict(pair[0] for pair in ca["subject"]) for ca in context.get_ca_certs()] == [
        {"commonName": "ubscore-test-ca"}
    ]


def test_mutual_tls_loads_the_client_certificate(cluster_of: Any, pem: Pem) -> None:
    env = {
        "UBS_CQL_SSL_CAFILE": str(pem.cert),
        "UBS_CQL_SSL_CERTFILE": str(pem.cert),
        "UBS_CQL_SSL_KEYFILE": str(pem.key),
    }
    assert isinstance(cluster_of(env).ssl_context, ssl.SSLContext)
    wrong = {**env, "UBS_CQL_SSL_KEYFILE": str(pem.cert)}  # a certificate is no key
    with pytest.raises(ssl.SSLError):
        cluster_of(wrong)


def test_the_keyspace_is_replicated_in_the_local_datacenter_when_one_is_named() -> None:
    named = load({"UBS_CQL_LOCAL_DC": "eu-west-1", "UBS_CQL_REPLICATION_FACTOR": "3"})
    assert keyspace_replication(named) == "{'class': 'NetworkTopologyStrategy', 'eu-west-1': 3}"
    assert keyspace_replication(load({"UBS_CQL_LOCAL_DC": "dc'1"})) == (
        "{'class': 'NetworkTopologyStrategy', 'dc''1': 1}"
    )  # a quote in the name cannot end the CQL string


class RecordingSession:
    """A session that answers every statement with no rows and keeps what it was sent."""

    def __init__(self) -> None:
        self.statements: List[str] = []

    def execute(self, statement: str, *args: Any) -> List[Any]:
        self.statements.append(statement)
        return []

    def prepare(self, statement: str) -> str:
        return statement


async def test_the_sink_creates_its_keyspace_in_the_local_datacenter(monkeypatch: pytest.MonkeyPatch) -> None:
    session = RecordingSession()
    opened = []

    def fake_cluster(settings: Any) -> Any:
        opened.append(settings)
        return type("Cluster", (), {"connect": lambda self: session, "shutdown": lambda self: None})()

    monkeypatch.setattr(cql, "new_cluster", fake_cluster)
    settings = load({"UBS_KEYSPACE": "ledger", "UBS_CQL_LOCAL_DC": "eu-west-1", "UBS_CQL_REPLICATION_FACTOR": "3"})
    store = cql.CqlStore(settings)
    await store.connect()
    store.close()
    assert opened == [settings]
    assert session.statements[0] == (
        "CREATE KEYSPACE IF NOT EXISTS ledger WITH replication = {'class': 'NetworkTopologyStrategy', 'eu-west-1': 3}"
    )
