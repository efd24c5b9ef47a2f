"""Configuration of a UBSCore worker, read from the environment once.

Every setting has a ``UBS_`` name. Faust reads some un-prefixed names of its own
(``BROKER_URL``, ``APP_STORE``, ``PROCESSING_GUARANTEE``...) and lets them override
keyword arguments; our prefix keeps the two apart, so what is set here is what runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from app.errors import ConfigurationError

PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value:
        raise ConfigurationError(f"{name} must not be empty")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """All knobs of a worker; defaults are the interface contract of DESIGN.md."""

    kafka: str = "kafka://127.0.0.1:9092"
    cql_hosts: Tuple[str, ...] = ("127.0.0.1",)
    cql_port: int = 9042
    keyspace: str = "ubscore"
    cql_replication_factor: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    advertised_host: str = "127.0.0.1"
    partitions: int = 8
    topic_replication_factor: int = 1
    data_dir: str = "./data"
    app_id: str = "ubscore"
    topic_prefix: str = ""
    store: str = "rocksdb://"
    processing_guarantee: str = "at_least_once"
    standby_replicas: int = 0
    session_timeout_s: float = 30.0
    results_retention_s: int = 7 * 24 * 3600
    wait_timeout_s: float = 10.0
    sink_batch_size: int = 500
    sink_batch_within_s: float = 0.05
    sink_concurrency: int = 32
    sink_retry_max_s: float = 10.0
    api_token: Optional[str] = field(default=None, repr=False)
    max_body_bytes: int = 16 * 1024
    failpoint: Optional[str] = None
    stall_s: float = 30.0
    max_fetch_bytes: int = 16 * 1024

    @property
    def stall_check_s(self) -> float:
        """How often the input progress watch looks (app/guards/input_watch.py)."""
        return min(5.0, self.stall_s / 4)

    @property
    def freeze_limit_s(self) -> float:
        """A worker frozen longer than this exits (app/guards/fencing.py): half the session timeout."""
        return self.session_timeout_s / 2

    @property
    def canonical_url(self) -> str:
        """The URL other workers use to reach this one (for routed reads)."""
        return f"http://{self.advertised_host}:{self.web_port}"

    def topic_name(self, base: str) -> str:
        """A topic's full name: ``UBS_TOPIC_PREFIX`` + the contract name (balance.events...)."""
        return f"{self.topic_prefix}{base}"

    @property
    def kafka_bootstrap(self) -> str:
        """Broker list without Faust's ``kafka://`` scheme, for plain aiokafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka.split(";"))


def load(env: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from ``env`` (default: the process environment); fail loudly on bad values."""
    env = os.environ if env is None else env
    guarantee = _text(env, "UBS_PROCESSING_GUARANTEE", "at_least_once")
    if guarantee not in PROCESSING_GUARANTEES:
        raise ConfigurationError(
            f"UBS_PROCESSING_GUARANTEE must be one of {', '.join(PROCESSING_GUARANTEES)}, got {guarantee!r}"
        )
    web_host = _text(env, "UBS_WEB_HOST", "127.0.0.1")
    # A worker bound to all interfaces still needs a concrete address that peers can call.
    default_advertised = "127.0.0.1" if web_host in ("0.0.0.0", "::") else web_host
    token = env.get("UBS_API_TOKEN", "").strip() or None
    return Settings(
        kafka=_text(env, "UBS_KAFKA", "kafka://127.0.0.1:9092"),
        cql_hosts=tuple(h.strip() for h in _text(env, "UBS_CQL_HOSTS", "127.0.0.1").split(",") if h.strip()),
        cql_port=_integer(env, "UBS_CQL_PORT", 9042, minimum=1),
        keyspace=_text(env, "UBS_KEYSPACE", "ubscore"),
        cql_replication_factor=_integer(env, "UBS_CQL_REPLICATION_FACTOR", 1, minimum=1),
        web_host=web_host,
        web_port=_integer(env, "UBS_WEB_PORT", 6066, minimum=1),
        advertised_host=_text(env, "UBS_ADVERTISED_HOST", default_advertised),
        partitions=_integer(env, "UBS_PARTITIONS", 8, minimum=1),
        topic_replication_factor=_integer(env, "UBS_TOPIC_REPLICATION_FACTOR", 1, minimum=1),
        data_dir=_text(env, "UBS_DATA_DIR", "./data"),
        app_id=_text(env, "UBS_APP_ID", "ubscore"),
        topic_prefix=env.get("UBS_TOPIC_PREFIX", "").strip(),
        store=_text(env, "UBS_STORE", "rocksdb://"),
        processing_guarantee=guarantee,
        standby_replicas=_integer(env, "UBS_STANDBY_REPLICAS", 0),
        session_timeout_s=_number(env, "UBS_SESSION_TIMEOUT_S", 30.0),
        results_retention_s=_integer(env, "UBS_RESULTS_RETENTION_S", 7 * 24 * 3600, minimum=60),
        wait_timeout_s=_number(env, "UBS_WAIT_TIMEOUT_S", 10.0),
        sink_batch_size=_integer(env, "UBS_SINK_BATCH_SIZE", 500, minimum=1),
        sink_batch_within_s=_number(env, "UBS_SINK_BATCH_WITHIN_S", 0.05),
        sink_concurrency=_integer(env, "UBS_SINK_CONCURRENCY", 32, minimum=1),
        sink_retry_max_s=_number(env, "UBS_SINK_RETRY_MAX_S", 10.0),
        api_token=token,
        max_body_bytes=_integer(env, "UBS_MAX_BODY_BYTES", 16 * 1024, minimum=256),
        failpoint=env.get("UBS_FAILPOINT", "").strip() or None,
        stall_s=_number(env, "UBS_STALL_S", 30.0),
        max_fetch_bytes=_integer(env, "UBS_MAX_FETCH_BYTES", 16 * 1024, minimum=1024),
    )


settings: Settings = load()
