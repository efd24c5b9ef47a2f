"""Every Kafka client goes through app.kafka_clients, and gets the security settings there.

The first tests read the source of app/, bench/ and tests/integration/: an aiokafka constructor
called anywhere else, or a Faust app made without the factory's credentials,
would connect in plaintext to a cluster that wants TLS and a login.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from app import kafka_clients
from app.kafka_clients import broker_credentials, security_options
from app.settings import Settings, load
from tests.unit.conftest import Pem

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "app" / "kafka_clients.py"
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
PASSWORD = "kafka-password-123"
SCRAM = {
    "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "UBS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "UBS_KAFKA_SASL_USERNAME": "ubscore",
    "UBS_KAFKA_SASL_PASSWORD": PASSWORD,
}


class Imports:
    """The names one module binds to aiokafka's clients, to faust.App and to the factory."""

    def __init__(self, tree: ast.AST) -> None:
        self.clients: Set[str] = set()
        self.apps: Set[str] = set()
        self.factories: Set[str] = set()
        self.credentials: Set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if node.module.split(".")[0] == "aiokafka" and alias.name in CLIENTS:
                        self.clients.add(bound)
                    elif node.module.split(".")[0] == "faust" and alias.name == "App":
                        self.apps.add(bound)
                    elif node.module == "app" and alias.name == "kafka_clients":
                        self.factories.add(bound)
                    elif node.module == "app.kafka_clients" and alias.name == "broker_credentials":
                        self.credentials.add(bound)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "app.kafka_clients" and alias.asname:
                        self.factories.add(alias.asname)

    def is_client(self, func: ast.expr) -> bool:
        """``AIOKafkaConsumer(...)`` under any alias, or ``aiokafka.AIOKafkaConsumer(...)`` under any module name."""
        return (isinstance(func, ast.Name) and func.id in self.clients) or (
            isinstance(func, ast.Attribute) and func.attr in CLIENTS
        )

    def is_app(self, func: ast.expr, subclasses: Set[str]) -> bool:
        """``faust.App(...)``, ``App(...)`` or a subclass of it, under any alias."""
        if isinstance(func, ast.Name):
            return func.id in self.apps or func.id in subclasses
        return isinstance(func, ast.Attribute) and (func.attr == "App" or func.attr in subclasses)

    def is_factory_credentials(self, value: ast.expr) -> bool:
        if not isinstance(value, ast.Call):
            return False
        func = value.func
        if isinstance(func, ast.Name):
            return func.id in self.credentials
        return (
            isinstance(func, ast.Attribute)
            and func.attr == "broker_credentials"
            and isinstance(func.value, ast.Name)
            and func.value.id in self.factories
        )


def app_subclasses(trees: List[ast.AST]) -> Set[str]:
    """Classes derived from faust.App, however far down, in any of the modules."""
    found: Set[str] = set()
    while True:
        before = len(found)
        for tree in trees:
            imports = Imports(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(imports.is_app(base, found) for base in node.bases):
                    found.add(node.name)
        if len(found) == before:
            return found


def bypasses(tree: ast.AST, subclasses: Set[str]) -> List[str]:
    """Where a module makes a Kafka client or a Faust app without the factory (line: what)."""
    imports = Imports(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(imports.is_client(base) for base in node.bases):
            found.append(f"{node.lineno}: subclass of an aiokafka client")
        if not isinstance(node, ast.Call):
            continue
        if imports.is_client(node.func):
            found.append(f"{node.lineno}: aiokafka client constructed")
        elif imports.is_app(node.func, subclasses):
            given = {keyword.arg: keyword.value for keyword in node.keywords}
            if not imports.is_factory_credentials(given.get("broker_credentials", ast.Constant(None))):
                found.append(
                    f"{node.lineno}: Faust app without broker_credentials=kafka_clients.broker_credentials(...)"
                )
    return found


#: The one module that makes clients with other logins on purpose: the secured stack's refusals.
OTHER_LOGINS = ROOT / "tests" / "integration" / "test_secured_cluster.py"


def sources() -> Iterator[Path]:
    """The app, the benchmarks, and the integration tests: these run on the secured stack too (make test-secure)."""
    for folder in ("app", "bench", "tests/integration"):
        yield from (path for path in sorted((ROOT / folder).rglob("*.py")) if path not in (FACTORY, OTHER_LOGINS))


def test_no_kafka_client_or_faust_app_is_made_outside_the_factory() -> None:
    parsed = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sources()}
    subclasses = app_subclasses(list(parsed.values()))
    assert "UBSCoreApp" in subclasses  # the check sees the one app UBSCore makes
    found = [
        f"{path.relative_to(ROOT)}:{where}" for path, tree in parsed.items() for where in bypasses(tree, subclasses)
    ]
    assert found == [], "construct Kafka clients with app.kafka_clients (new_producer, new_consumer, ...)"


@pytest.mark.parametrize(
    "source",
    [
        "from aiokafka import AIOKafkaProducer as P\nP(bootstrap_servers='x')",
        "import aiokafka as ak\nak.AIOKafkaConsumer('t')",
        "from aiokafka.admin import AIOKafkaAdminClient\nAIOKafkaAdminClient()",
        "from aiokafka import AIOKafkaConsumer\nclass Mine(AIOKafkaConsumer): ...",
        "import faust\nfaust.App('id', broker='kafka://x')",
        "from faust import App as A\nA('id', broker_credentials=None)",
        "import faust\nclass Mine(faust.App): ...\nMine('id')",
    ],
)
def test_the_check_finds_a_bypass_under_any_alias(source: str) -> None:
    tree = ast.parse(source)
    assert bypasses(tree, app_subclasses([tree]))


def test_the_check_lets_the_factory_s_credentials_through() -> None:
    source = (
        "import faust\nfrom app import kafka_clients\nfrom app.kafka_clients import broker_credentials as creds\n"
        "class Mine(faust.App): ...\n"
        "Mine('id', broker_credentials=creds(settings))\n"
        "faust.App('id', broker_credentials=kafka_clients.broker_credentials(settings))"
    )
    tree = ast.parse(source)
    assert bypasses(tree, app_subclasses([tree])) == []


def test_plaintext_adds_nothing_but_the_protocol() -> None:
    assert security_options(load({})) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(load({})) is None


def test_sasl_ssl_logs_in_over_tls_that_checks_the_broker() -> None:
    options = security_options(load(SCRAM))
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ubscore",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_plaintext_has_no_tls() -> None:
    options = security_options(load({**SCRAM, "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}))
    assert options["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in options


def test_mutual_tls_trusts_the_ca_file_and_loads_the_client_certificate(pem: Pem) -> None:
    env = {
        "UBS_KAFKA_SECURITY_PROTOCOL": "SSL",
        "UBS_KAFKA_SSL_CAFILE": str(pem.cert),
        "UBS_KAFKA_SSL_CERTFILE": str(pem.cert),
        "UBS_KAFKA_SSL_KEYFILE": str(pem.key),
    }
    options = security_options(load(env))
    assert options.keys() == {"security_protocol", "ssl_context"}
    trusted = [dict(pair[0] for pair in ca["subject"]) for ca in options["ssl_context"].get_ca_certs()]
    assert trusted == [{"commonName": "ubscore-test-ca"}]


def test_a_key_that_is_not_the_certificate_s_is_refused_when_the_client_is_made(pem: Pem, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text(pem.cert.read_text(encoding="utf-8"), encoding="utf-8")  # a certificate is no key
    env = {
        "UBS_KAFKA_SECURITY_PROTOCOL": "SSL",
        "UBS_KAFKA_SSL_CERTFILE": str(pem.cert),
        "UBS_KAFKA_SSL_KEYFILE": str(other),
    }
    with pytest.raises(ssl.SSLError):
        security_options(load(env))


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"UBS_KAFKA_SECURITY_PROTOCOL": "SSL"},
        {**SCRAM, "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "UBS_KAFKA_SASL_MECHANISM": "PLAIN"},
        SCRAM,
    ],
)
def test_faust_s_clients_get_the_same_security_as_ours(env: Dict[str, str]) -> None:
    config = load(env)
    faust_options = dict(credentials_to_aiokafka_auth(broker_credentials(config)))
    ours = security_options(config)
    assert faust_options.keys() >= ours.keys()
    for name, value in ours.items():
        if name == "ssl_context":
            assert isinstance(faust_options[name], ssl.SSLContext)
        else:
            assert faust_options[name] == value


def test_faust_credentials_are_the_sdk_types_and_hide_the_password() -> None:
    assert isinstance(broker_credentials(load({"UBS_KAFKA_SECURITY_PROTOCOL": "SSL"})), SSLCredentials)
    credentials = broker_credentials(load(SCRAM))
    assert isinstance(credentials, SASLCredentials)
    assert PASSWORD not in repr(credentials) and PASSWORD not in str(credentials)


def recording(cls: type, made: List[Dict[str, Any]]) -> Any:
    """``cls`` itself, constructed for real (aiokafka checks its security options), with the keywords kept."""

    def construct(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return cls(*args, **kwargs)

    return construct


@pytest.fixture()
def made(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """The factory, with the SCRAM settings of this module and its constructors recorded."""
    seen: List[Dict[str, Any]] = []
    config: Settings = load(SCRAM)
    monkeypatch.setattr(kafka_clients, "settings", config)
    for cls in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        monkeypatch.setattr(kafka_clients, cls.__name__, recording(cls, seen))
    return seen


async def test_the_factory_adds_the_security_to_what_the_call_site_passes(made: List[Dict[str, Any]]) -> None:
    producer = kafka_clients.new_producer("broker:9093", acks="all", linger_ms=5)
    consumer = kafka_clients.new_consumer("broker:9093", "topic", group_id="group", enable_auto_commit=False)
    admin = kafka_clients.new_admin_client("broker:9093", request_timeout_ms=1000)
    try:
        site_options = [{"acks": "all", "linger_ms": 5}, {"group_id": "group", "enable_auto_commit": False}]
        site_options.append({"request_timeout_ms": 1000})
        for options, site in zip(made, site_options, strict=True):
            assert options["bootstrap_servers"] == "broker:9093"
            assert {name: options[name] for name in site} == site
            assert options["security_protocol"] == "SASL_SSL"
            assert options["sasl_mechanism"] == "SCRAM-SHA-512"
            assert options["sasl_plain_username"] == "ubscore" and options["sasl_plain_password"] == PASSWORD
            assert isinstance(options["ssl_context"], ssl.SSLContext)
        assert consumer.subscription() == {"topic"}
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()


async def test_a_call_site_cannot_override_the_security(made: List[Dict[str, Any]]) -> None:
    with pytest.raises(TypeError, match="security_protocol"):
        kafka_clients.new_producer("broker:9093", security_protocol="PLAINTEXT")
