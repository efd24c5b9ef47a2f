"""Configuration of a UBSCore worker, read from the environment once.

Every setting has a ``UBS_`` name. Faust reads some un-prefixed names of its own
(``BROKER_URL``, ``APP_STORE``, ``PROCESSING_GUARANTEE``...) and lets them override
keyword arguments; our prefix keeps the two apart, so what is set here is what runs.

Each setting is declared once, as a field of ``Settings`` with its variable, its
default and its help text; ``load`` reads them all from that declaration, and the
settings table of docs/settings.md is generated from it (``python -m app.settings
--write``), so the three cannot disagree (tests/unit/test_settings.py checks that page).

Passwords and tokens are ``Secret`` values, shown as ``***`` wherever they are printed, and
may come from a file instead (``<NAME>_FILE``), as mounted container secrets do.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from app.errors import ConfigurationError

PROCESSING_GUARANTEES = ("at_least_once",)
ROLES = ("all", "ledger", "sink")
MEMBERSHIPS = ("static", "dynamic")
LOG_FORMATS = ("text", "json")
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: cassandra-driver's ConsistencyLevel names that serve both the sink's writes and the history reads
#: (ANY cannot read; SERIAL and LOCAL_SERIAL are for conditional updates only).
CQL_CONSISTENCIES = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
TABLE_BEGIN, TABLE_END = "<!-- settings:begin -->", "<!-- settings:end -->"
#: The page whose settings table ``python -m app.settings --write`` updates when given no other.
SETTINGS_PAGE = "docs/settings.md"
_ALL_INTERFACES = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Secret:
    """A password or token that prints as ``***``: a settings dump, a log line or an error cannot carry it.

    Only the client that sends it calls ``reveal()``.
    """

    _value: str

    def reveal(self) -> str:
        """The secret itself, for the one call that authenticates with it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _setting(
    env: str,
    default: Any,
    help: str,
    parse: str = "text",
    minimum: float = 0,
    shown: Optional[str] = None,
) -> Any:
    """A field of Settings: its variable, default, parser (text, integer, number, hosts, secret...) and help."""
    metadata = {"env": env, "parse": parse, "minimum": minimum, "help": help, "shown": shown}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """All knobs of a worker, with the defaults of the interface contract."""

    role: str = _setting(
        "UBS_ROLE",
        "all",
        "what `ubscore worker` runs: `all` (gateway, ledger and settlement sink), `ledger` (gateway and "
        "ledger) or `sink` (the settlement sink alone: its database driver then has an interpreter of its own)",
        "role",
    )
    kafka: str = _setting("UBS_KAFKA", "kafka://127.0.0.1:9092", "Kafka bootstrap servers (`;` separated)")
    kafka_security_protocol: str = _setting(
        "UBS_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "how every Kafka client of UBSCore connects: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or `SASL_SSL` "
        "(a SASL login, over TLS for the second); see docs/deployment.md",
        "kafka_protocol",
    )
    kafka_sasl_mechanism: Optional[str] = _setting(
        "UBS_KAFKA_SASL_MECHANISM",
        None,
        "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; needed by the `SASL_` protocols",
        "sasl_mechanism",
    )
    kafka_sasl_username: Optional[str] = _setting(
        "UBS_KAFKA_SASL_USERNAME", None, "SASL user; needed by the `SASL_` protocols", "optional"
    )
    kafka_sasl_password: Optional[Secret] = _setting(
        "UBS_KAFKA_SASL_PASSWORD", None, "SASL password; needed by the `SASL_` protocols", "secret"
    )
    kafka_ssl_cafile: Optional[str] = _setting(
        "UBS_KAFKA_SSL_CAFILE",
        None,
        "PEM file of the CAs that sign the brokers' certificates (`SSL`, `SASL_SSL`); unset: the system's CAs",
        "file",
    )
    kafka_ssl_certfile: Optional[str] = _setting(
        "UBS_KAFKA_SSL_CERTFILE",
        None,
        "PEM client certificate, for brokers that require one (mutual TLS); needs `UBS_KAFKA_SSL_KEYFILE`",
        "file",
    )
    kafka_ssl_keyfile: Optional[str] = _setting(
        "UBS_KAFKA_SSL_KEYFILE", None, "PEM private key of `UBS_KAFKA_SSL_CERTFILE`", "file"
    )
    cql_hosts: Tuple[str, ...] = _setting(
        "UBS_CQL_HOSTS", ("127.0.0.1",), "CQL contact points (`,` separated)", "hosts"
    )
    cql_port: int = _setting("UBS_CQL_PORT", 9042, "CQL port", "integer", 1)
    cql_username: Optional[str] = _setting(
        "UBS_CQL_USERNAME", None, "CQL user (password authentication); needs `UBS_CQL_PASSWORD`", "optional"
    )
    cql_password: Optional[Secret] = _setting("UBS_CQL_PASSWORD", None, "password of `UBS_CQL_USERNAME`", "secret")
    cql_ssl_cafile: Optional[str] = _setting(
        "UBS_CQL_SSL_CAFILE",
        None,
        "PEM file of the CAs that sign the database nodes' certificates: when set, CQL connections use TLS",
        "file",
    )
    cql_ssl_certfile: Optional[str] = _setting(
        "UBS_CQL_SSL_CERTFILE",
        None,
        "PEM client certificate, for nodes that require one (mutual TLS); needs `UBS_CQL_SSL_KEYFILE`",
        "file",
    )
    cql_ssl_keyfile: Optional[str] = _setting(
        "UBS_CQL_SSL_KEYFILE", None, "PEM private key of `UBS_CQL_SSL_CERTFILE`", "file"
    )
    cql_local_dc: Optional[str] = _setting(
        "UBS_CQL_LOCAL_DC",
        None,
        "the database's datacenter next to the workers: queries go to its nodes only, and the keyspace is "
        "created with `NetworkTopologyStrategy` there; unset: the datacenter of the first contact point, and "
        "`SimpleStrategy`",
        "optional",
    )
    cql_consistency: str = _setting(
        "UBS_CQL_CONSISTENCY",
        "LOCAL_QUORUM",
        "consistency level of the sink's writes and of the reads of `GET /accounts/{id}/events` and `ubscore verify`: "
        f"{', '.join(f'`{level}`' for level in CQL_CONSISTENCIES)} (ScyllaDB refuses reads at `EACH_QUORUM`)",
        "consistency",
    )
    keyspace: str = _setting("UBS_KEYSPACE", "ubscore", "keyspace, created if missing")
    web_host: str = _setting("UBS_WEB_HOST", "127.0.0.1", "interface the gateway binds to")
    web_port: int = _setting("UBS_WEB_PORT", 6066, "gateway port", "integer", 1)
    web_behind_proxy: bool = _setting(
        "UBS_WEB_BEHIND_PROXY",
        False,
        "`1` declares a TLS-terminating proxy in front of a gateway bound to a non-loopback address; without it, "
        "or `UBS_WEB_TLS_CERTFILE`, such a gateway warns at every start that it serves plain HTTP",
        "flag",
        shown="`0`",
    )
    web_tls_certfile: Optional[str] = _setting(
        "UBS_WEB_TLS_CERTFILE",
        None,
        "PEM certificate chain (the worker's own first) the gateway serves HTTPS with, instead of plain HTTP; its "
        "names must cover `UBS_ADVERTISED_HOST`, which other workers then reach over https; needs "
        "`UBS_WEB_TLS_KEYFILE` (see docs/deployment.md)",
        "file",
    )
    web_tls_keyfile: Optional[str] = _setting(
        "UBS_WEB_TLS_KEYFILE", None, "PEM private key of `UBS_WEB_TLS_CERTFILE`, unencrypted", "file"
    )
    web_tls_cafile: Optional[str] = _setting(
        "UBS_WEB_TLS_CAFILE",
        None,
        "PEM file of the CAs that sign the gateways' certificates: routed reads between workers and the `ubscore` "
        "commands verify an https gateway against it; unset: the system's CAs",
        "file",
    )
    web_route_connections: int = _setting(
        "UBS_WEB_ROUTE_CONNECTIONS",
        32,
        "connections a worker opens to each other worker, at most, for routed reads and waits; a request that "
        "finds them all busy waits up to 5 s for one, then answers 503 `owner_unavailable`",
        "integer",
        1,
    )
    web_max_waiters: int = _setting(
        "UBS_WEB_MAX_WAITERS",
        1000,
        "requests that may wait for a result on this worker at once: submits with `?wait=true` received here, "
        "and result reads with `?wait_s=` served here as the user's owner; one more is answered 503 `overloaded` "
        "with `Retry-After` (a submit before anything is produced)",
        "integer",
        1,
    )
    web_header_timeout_s: float = _setting(
        "UBS_WEB_HEADER_TIMEOUT_S",
        10.0,
        "a request's line and headers must arrive within this long of its first byte (of the connection's "
        "opening, for its first request); a slower client is disconnected",
        "number",
    )
    web_body_timeout_s: float = _setting(
        "UBS_WEB_BODY_TIMEOUT_S",
        10.0,
        "a request's body must arrive within this long of its headers; a slower client is disconnected",
        "number",
    )
    web_keepalive_timeout_s: float = _setting(
        "UBS_WEB_KEEPALIVE_TIMEOUT_S",
        75.0,
        "an idle keep-alive connection is closed after this long; keep it above the idle timeout of any proxy "
        "or connection pool in front of the gateway",
        "number",
    )
    insecure: bool = _setting(
        "UBS_INSECURE",
        False,
        "`1` lets a gateway bound to a non-loopback address start without any API key, open to anyone who "
        "reaches it (a warning at every start); without it such a worker refuses to start (exit 78)",
        "flag",
        shown="`0`",
    )
    advertised_host: str = _setting(
        "UBS_ADVERTISED_HOST",
        "",
        "host other workers use to reach this one (routed reads); 127.0.0.1 when bound to all interfaces",
        "optional",
        shown="`UBS_WEB_HOST`",
    )
    partitions: int = _setting("UBS_PARTITIONS", 8, "partitions of every user-keyed topic and table", "integer", 1)
    data_dir: str = _setting("UBS_DATA_DIR", "./data", "RocksDB files of the tables")
    processing_guarantee: str = _setting(
        "UBS_PROCESSING_GUARANTEE",
        "at_least_once",
        'the only one: the ledger checkpoints its own writes (docs/design.md, "Processing guarantee")',
        "guarantee",
    )
    standby_replicas: int = _setting(
        "UBS_STANDBY_REPLICAS", 0, 'Faust table standby replicas (see docs/design.md, "Several workers")', "integer"
    )
    session_timeout_s: float = _setting(
        "UBS_SESSION_TIMEOUT_S",
        30.0,
        "how long a silent worker keeps its partitions before they move; a worker frozen for half of it "
        "exits on waking (exit 75, see docs/operating.md)",
        "number",
    )
    ownership_bound_s: float = _setting(
        "UBS_OWNERSHIP_BOUND_S",
        None,
        "a worker serves its partitions' reads only while its last heartbeat answered by the group coordinator "
        "is at most this old; past it reads answer 503 `not_owner_confirmed` and `/health` says `partitioned`, "
        "and a checkpoint write not acknowledged by then makes the worker exit 69. "
        "Must be below `UBS_SESSION_TIMEOUT_S` (see docs/operating.md)",
        "number",
        shown="half of `UBS_SESSION_TIMEOUT_S`",
    )
    results_retention_s: int = _setting(
        "UBS_RESULTS_RETENTION_S",
        7 * 24 * 3600,
        "how long an op_id, hold id or trade id is remembered, in the log's time (7 days); input topics and the"
        " results changelog keep twice that",
        "integer",
        60,
    )
    wait_timeout_s: float = _setting("UBS_WAIT_TIMEOUT_S", 10.0, "how long `?wait=true` waits before 504", "number")
    api_keys_file: Optional[str] = _setting(
        "UBS_API_KEYS_FILE",
        None,
        "JSON file of API keys (sha256 of each secret, scopes, user ranges), read at start and on SIGHUP; once "
        "any key is configured every route but `/health` needs `Authorization: Bearer <secret>` "
        "(docs/api-keys.md)",
        "optional",
    )
    api_token: Optional[Secret] = _setting(
        "UBS_API_TOKEN",
        None,
        "a key with every scope for every user, beside or instead of `UBS_API_KEYS_FILE`",
        "secret",
    )
    api_key: Optional[Secret] = _setting(
        "UBS_API_KEY",
        None,
        "the secret the `ubscore` commands send as `Authorization: Bearer` (`UBS_API_TOKEN` when unset)",
        "secret",
    )
    max_body_bytes: int = _setting(
        "UBS_MAX_BODY_BYTES",
        16 * 1024,
        "largest operation, as a request body (413, chunked or not: aiohttp stops reading it there) or a topic "
        "message (dead letter)",
        "integer",
        256,
    )
    app_id: str = _setting("UBS_APP_ID", "ubscore", "Faust app id: consumer group and changelog topic names")
    topic_prefix: str = _setting(
        "UBS_TOPIC_PREFIX", "", "prefix for all topic names (the tests give each run its own)", "optional"
    )
    store: str = _setting("UBS_STORE", "rocksdb://", "Faust table store (`memory://` in agent tests)")
    max_fetch_bytes: int = _setting(
        "UBS_MAX_FETCH_BYTES",
        256 * 1024,
        "bytes fetched per input partition at a time: what is buffered is a few seconds of work at most, so one "
        'topic\'s backlog cannot starve the other for long (see docs/design.md, "The progress watch")',
        "integer",
        1024,
    )
    group_membership: str = _setting(
        "UBS_GROUP_MEMBERSHIP",
        "static",
        "`static`: the worker is a static member of its consumer groups, named by its advertised URL, so one "
        "restarted at the same URL (after a crash too) gets its partitions back at once instead of after "
        "`UBS_SESSION_TIMEOUT_S`, while one stopped for good keeps them until that timeout; `dynamic`: every stop "
        "and start moves partitions (see docs/operating.md)",
        "membership",
    )
    bulk_recovery_min_records: int = _setting(
        "UBS_BULK_RECOVERY_MIN_RECORDS",
        10_000,
        "a table partition at least this many changelog records behind when its recovery starts is loaded in bulk "
        'first, and Faust reads only the rest (see docs/design.md, "Local state and recovery")',
        "integer",
        1,
    )
    max_poll_records: int = _setting(
        "UBS_MAX_POLL_RECORDS",
        500,
        "input records Faust hands the ledger per poll, across partitions",
        "integer",
        1,
    )
    stall_s: float = _setting(
        "UBS_STALL_S",
        30.0,
        "an owned input partition with records waiting and no progress for this long is resumed, and if still "
        "stuck one period later the worker exits 70 for its supervisor (see docs/operating.md)",
        "number",
    )
    topic_replication_factor: int = _setting(
        "UBS_TOPIC_REPLICATION_FACTOR", 1, "replication factor of the topics it creates", "integer", 1
    )
    cql_replication_factor: int = _setting(
        "UBS_CQL_REPLICATION_FACTOR",
        1,
        "replication factor of the keyspace it creates (in `UBS_CQL_LOCAL_DC` when set)",
        "integer",
        1,
    )
    batch_max: int = _setting(
        "UBS_BATCH_MAX",
        1000,
        "input messages the ledger decides while one checkpoint is in flight, at most; a batch is what arrives "
        'meanwhile (see docs/design.md, "Batches and checkpoints")',
        "integer",
        1,
    )
    max_assets_per_account: int = _setting(
        "UBS_MAX_ASSETS_PER_ACCOUNT",
        1000,
        "assets one account may hold; an operation that would add one more is rejected `too_many_assets` (a credit "
        "is returned to its payer, trade fees parked). An account row takes at most 150 bytes per asset and must "
        "fit one Kafka record (`max.message.bytes`, 1 MiB by default): keep it below 6,000",
        "integer",
        1,
    )
    expiry_check_s: float = _setting(
        "UBS_EXPIRY_CHECK_S",
        1.0,
        "how often the ledger looks for holds past their expires_at_ms; a hold is released at most this much late",
        "number",
    )
    lag_interval_s: float = _setting(
        "UBS_LAG_INTERVAL_S",
        5.0,
        "how often a worker reads its input partitions' consumer lag from Kafka for `/metrics` "
        "(`ubscore_consumer_lag_records`)",
        "number",
    )
    log_format: str = _setting(
        "UBS_LOG_FORMAT",
        "text",
        "`text`: one line per event, `event key=value ...`; `json`: the same events as JSON lines, one object "
        "each with `ts`, `level`, `logger`, `event` and the event's fields (op_id, user_id, partition, offset... "
        "where the event has them)",
        "log_format",
    )
    sink_batch_size: int = _setting("UBS_SINK_BATCH_SIZE", 500, "events per settlement batch, at most", "integer", 1)
    sink_batch_within_s: float = _setting(
        "UBS_SINK_BATCH_WITHIN_S", 0.05, "how long the sink waits to fill a batch", "number"
    )
    sink_concurrency: int = _setting("UBS_SINK_CONCURRENCY", 32, "database writes in flight per batch", "integer", 1)
    sink_retry_max_s: float = _setting(
        "UBS_SINK_RETRY_MAX_S", 10.0, "longest backoff between database retries", "number"
    )
    failpoint: Optional[str] = _setting(
        "UBS_FAILPOINT",
        None,
        "tests only: `after_results:N`, `after_table_write:N`, `after_send:N` (the ledger's checkpoint steps, "
        "counted in input messages), `before_commit:N` or `after_produce:N` (gateway: "
        "Kafka acked, client not answered yet) SIGKILL the worker at the Nth pass; `stall_input:N` / "
        "`stall_input_hard:N` pause its input inside Faust after the agent's Nth message (the second also "
        "disables Faust's resume); `raise_in_decision:N` makes the ledger's decision for its Nth message "
        "raise, as a bug would",
        "optional",
    )

    @property
    def stall_check_s(self) -> float:
        """How often the input progress watch looks (app/guards/input_watch.py)."""
        return min(5.0, self.stall_s / 4)

    @property
    def freeze_limit_s(self) -> float:
        """A worker frozen longer than this exits (app/frame/fencing.py): half the session timeout."""
        return self.session_timeout_s / 2

    @property
    def client_secret(self) -> Optional[str]:
        """The API key the ``ubscore`` commands present: UBS_API_KEY, else UBS_API_TOKEN (every scope)."""
        chosen = self.api_key or self.api_token
        return None if chosen is None else chosen.reveal()

    @property
    def web_tls(self) -> bool:
        """Whether the gateway serves HTTPS (app.web.tls); the settings refuse a certificate without its key."""
        return self.web_tls_certfile is not None

    @property
    def canonical_url(self) -> str:
        """The URL other workers use to reach this one (routed reads go to the scheme it names)."""
        scheme = "https" if self.web_tls else "http"
        return f"{scheme}://{self.advertised_host}:{self.web_port}"

    def group_instance_id(self, group: str) -> Optional[str]:
        """This worker's static member name in a consumer group (Kafka's group.instance.id), None if dynamic.

        The advertised URL is unique per worker (reads are routed by it) and
        Faust's assignor refuses an assignment made for another URL, so a worker
        whose URL changed must join as a new member. A sink-only process serves
        no URL, so it stays a dynamic member.
        """
        if self.group_membership != "static" or self.role == "sink":
            return None
        # Turning TLS on changes the URL, so it names another member; the plain names stay what they were.
        name = f"{'https-' if self.web_tls else ''}{self.advertised_host}-{self.web_port}-{group}"
        # Kafka allows letters, digits, '.', '_' and '-' in the name.
        return re.sub(r"[^A-Za-z0-9._-]", "_", name)

    def topic_name(self, base: str) -> str:
        """A topic's full name: ``UBS_TOPIC_PREFIX`` + the contract name (balance.events...)."""
        return f"{self.topic_prefix}{base}"

    def changelog_name(self, table: str) -> str:
        """The changelog topic of one of the ledger's tables, as Faust names it: ``<app id>-<table>-changelog``."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def kafka_bootstrap(self) -> str:
        """Broker list without Faust's ``kafka://`` scheme, for plain aiokafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka.split(";"))


def _integer(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _number(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


def _guarantee(raw: str, name: str) -> str:
    if raw == "exactly_once":
        # Faust's transactions cover only Faust's producer; the checkpoint writes through its own.
        raise ConfigurationError(
            f"{name}=exactly_once is not supported: the ledger orders and acknowledges its own writes "
            '(docs/design.md, "Processing guarantee"); use at_least_once'
        )
    if raw not in PROCESSING_GUARANTEES:
        raise ConfigurationError(f"{name} must be one of {', '.join(PROCESSING_GUARANTEES)}, got {raw!r}")
    return raw


def _one_of(choices: Tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(raw: str, name: str) -> str:
        if raw not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _flag(raw: str, name: str) -> bool:
    if raw not in ("0", "1"):
        raise ConfigurationError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _hosts(raw: str, name: str) -> Tuple[str, ...]:
    hosts = tuple(host.strip() for host in raw.split(",") if host.strip())
    if not hosts:
        raise ConfigurationError(f"{name} must name at least one host")
    return hosts


def _file(raw: str, name: str) -> str:
    # A missing certificate would otherwise surface as a TLS failure at the first connection, far from its cause.
    if not os.path.isfile(raw):
        raise ConfigurationError(f"{name} names no file: {raw}")
    return raw


_PARSERS: Dict[str, Callable[[str, str], Any]] = {
    "text": lambda raw, name: raw,
    "optional": lambda raw, name: raw,
    "integer": _integer,
    "number": _number,
    "guarantee": _guarantee,
    "role": _one_of(ROLES),
    "membership": _one_of(MEMBERSHIPS),
    "log_format": _one_of(LOG_FORMATS),
    "kafka_protocol": _one_of(KAFKA_PROTOCOLS),
    "sasl_mechanism": _one_of(SASL_MECHANISMS),
    "consistency": _one_of(CQL_CONSISTENCIES),
    "hosts": _hosts,
    "file": _file,
    "secret": lambda raw, name: Secret(raw),
    "flag": _flag,
}


def _read(env: Mapping[str, str], meta: Mapping[str, Any], default: Any) -> Any:
    name = meta["env"]
    raw = _raw_secret(env, name) if meta["parse"] == "secret" else env.get(name, "").strip()
    if not raw:
        # An empty variable unsets a setting that is unset by default (as compose's ``${VAR:-}`` leaves it).
        if meta["parse"] != "optional" and default is not None and name in env:
            raise ConfigurationError(f"{name} must not be empty")
        return default
    value = _PARSERS[meta["parse"]](raw, name)
    if meta["parse"] == "integer" and value < meta["minimum"]:
        raise ConfigurationError(f"{name} must be at least {meta['minimum']}, got {value}")
    return value


def _raw_secret(env: Mapping[str, str], name: str) -> str:
    """``name``'s value, or the content of the file ``name_FILE`` names, without its trailing newline.

    The error messages name the variables and the path, never the content.
    """
    raw = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return raw
    if raw:
        raise ConfigurationError(f"{name} and {name}_FILE are both set: give the secret one way")
    try:
        with open(path, encoding="utf-8") as secret:
            content = secret.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{name}_FILE: cannot read {path} ({type(exc).__name__})") from None
    if not content:
        raise ConfigurationError(f"{name}_FILE: {path} is empty")
    return content


def load(env: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from ``env`` (default: the process environment); fail loudly on bad values."""
    env = os.environ if env is None else env
    values = {spec.name: _read(env, spec.metadata, spec.default) for spec in fields(Settings)}
    if not values["advertised_host"]:
        # A worker bound to all interfaces still needs a concrete address that peers can call.
        web_host = values["web_host"]
        values["advertised_host"] = "127.0.0.1" if web_host in _ALL_INTERFACES else web_host
    _check_ownership_bound(values)
    _check_kafka_security(values)
    _check_cql_security(values)
    _pair(values, "web_tls_certfile", "web_tls_keyfile")
    return Settings(**values)


def _check_ownership_bound(values: Dict[str, Any]) -> None:
    """Half the session timeout unless set; refused at or above it.

    The coordinator moves a worker's partitions a full session timeout after the
    last heartbeat it received: a worker that vouched for its partitions that
    long after its last one could be vouching for partitions another worker
    already applies to (app.frame.ownership).
    """
    session_s = values["session_timeout_s"]
    if values["ownership_bound_s"] is None:
        values["ownership_bound_s"] = session_s / 2
    elif values["ownership_bound_s"] >= session_s:
        raise ConfigurationError(
            f"UBS_OWNERSHIP_BOUND_S must be below UBS_SESSION_TIMEOUT_S ({session_s:g}), "
            f"got {values['ownership_bound_s']:g}"
        )


def _check_kafka_security(values: Mapping[str, Any]) -> None:
    """Refuse a half-configured Kafka login or TLS now: a client finds out only at connect, in a retry loop.

    A setting the protocol would ignore is refused too, so that what is set is what runs.
    """
    protocol = values["kafka_security_protocol"]
    because = f"UBS_KAFKA_SECURITY_PROTOCOL is {protocol}"
    sasl = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    if protocol.startswith("SASL_"):
        _require(values, sasl, because)
    else:
        _refuse(values, sasl, f"{because}, which sends no SASL login")
    if protocol not in KAFKA_TLS_PROTOCOLS:
        _refuse(values, ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"), f"{because}, without TLS")
    _pair(values, "kafka_ssl_certfile", "kafka_ssl_keyfile")


def _check_cql_security(values: Mapping[str, Any]) -> None:
    """Refuse a half-configured CQL login or TLS now, as for Kafka; a CA file is what turns CQL's TLS on."""
    _pair(values, "cql_username", "cql_password")
    _pair(values, "cql_ssl_certfile", "cql_ssl_keyfile")
    if values["cql_ssl_cafile"] is None:
        _refuse(values, ("cql_ssl_certfile",), "UBS_CQL_SSL_CAFILE is unset, so CQL connections use no TLS")


def _env(name: str) -> str:
    return next(spec.metadata["env"] for spec in fields(Settings) if spec.name == name)


def _require(values: Mapping[str, Any], names: Tuple[str, ...], because: str) -> None:
    for name in names:
        if values[name] is None:
            raise ConfigurationError(f"{_env(name)} must be set: {because}")


def _refuse(values: Mapping[str, Any], names: Tuple[str, ...], because: str) -> None:
    for name in names:
        if values[name] is not None:
            raise ConfigurationError(f"{_env(name)} is set but unused: {because}")


def _pair(values: Mapping[str, Any], first: str, second: str) -> None:
    """Two settings that only work together (a certificate and its key, a user and its password)."""
    if values[first] is not None:
        _require(values, (second,), f"{_env(first)} is set")
    if values[second] is not None:
        _require(values, (first,), f"{_env(second)} is set")


def markdown_table() -> str:
    """The settings table of docs/settings.md, generated from the declarations above."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for spec in fields(Settings):
        meta = spec.metadata
        variable = f"`{meta['env']}`" + (f" or `{meta['env']}_FILE`" if meta["parse"] == "secret" else "")
        rows.append(f"| {variable} | {meta['shown'] or _shown(spec.default)} | {meta['help']} |")
    return "\n".join(rows)


def write_table(path: str = SETTINGS_PAGE) -> None:
    """Replace the table between a page's settings markers with the generated one."""
    with open(path, encoding="utf-8") as page:
        text = page.read()
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    with open(path, "w", encoding="utf-8") as page:
        page.write(f"{head}{TABLE_BEGIN}\n{markdown_table()}\n{TABLE_END}{tail}")


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if default == "":
        return "empty"
    if isinstance(default, tuple):
        default = ",".join(default)
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


settings: Settings = load()

if __name__ == "__main__":
    # python -m app.settings: print the table; --write [PATH]: update it in PATH (docs/settings.md).
    if sys.argv[1:2] == ["--write"]:
        write_table(*sys.argv[2:3])
    else:
        sys.stdout.write(markdown_table() + "\n")
