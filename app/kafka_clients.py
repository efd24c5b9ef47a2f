"""Every Kafka client UBSCore opens, built with the cluster's security settings.

A client made anywhere else would connect in plaintext, without a login, to a
cluster that wants TLS and SASL: it would work against the local stack and fail
in production, in a retry loop far from its cause. So the plain aiokafka
clients (``new_producer``, ``new_consumer``, ``new_admin_client``) and the Faust
app (``broker_credentials``) take their security from here alone, and
tests/unit/test_kafka_clients.py refuses any other constructor in app/ and bench/.

Each call site passes its own options (acks, group, fetch sizes...); only the
security keywords are added, and passing one of them too is a TypeError.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from app.settings import KAFKA_TLS_PROTOCOLS, Settings, settings


def new_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    """An aiokafka producer for ``bootstrap``, with ``options`` and this process's Kafka security."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options, **security_options(settings))


def new_consumer(bootstrap: str, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer for ``bootstrap`` (subscribed to ``topics``), with ``options`` and the security."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **options, **security_options(settings))


def new_admin_client(bootstrap: str, **options: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client for ``bootstrap``, with ``options`` and this process's Kafka security."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options, **security_options(settings))


def security_options(config: Settings) -> Dict[str, Any]:
    """aiokafka's security keywords for ``config``: protocol, TLS context, SASL login.

    A new TLS context per client: certificates rotated on disk are picked up by the next client.
    """
    protocol = config.kafka_security_protocol
    options: Dict[str, Any] = {"security_protocol": protocol}
    if protocol in KAFKA_TLS_PROTOCOLS:
        options["ssl_context"] = _ssl_context(config)
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = config.kafka_sasl_mechanism
        options["sasl_plain_username"] = config.kafka_sasl_username
        options["sasl_plain_password"] = _sasl_password(config)
    return options


def broker_credentials(config: Settings) -> Optional[CredentialsT]:
    """Faust's ``broker_credentials`` for ``config``: its own clients then connect as ours do (None: plaintext).

    Faust turns these into the same aiokafka keywords as ``security_options``
    (faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth); a SASL
    login goes over TLS when it is given a context.
    """
    protocol = config.kafka_security_protocol
    context = _ssl_context(config) if protocol in KAFKA_TLS_PROTOCOLS else None
    if protocol.startswith("SASL_"):
        return SASLCredentials(
            username=config.kafka_sasl_username,
            password=_sasl_password(config),
            ssl_context=context,
            mechanism=config.kafka_sasl_mechanism,
        )
    return SSLCredentials(context) if context is not None else None


def _ssl_context(config: Settings) -> ssl.SSLContext:
    """TLS that checks the broker's certificate and host name, with the system's CAs unless a CA file is set."""
    return create_ssl_context(
        cafile=config.kafka_ssl_cafile, certfile=config.kafka_ssl_certfile, keyfile=config.kafka_ssl_keyfile
    )


def _sasl_password(config: Settings) -> str:
    assert config.kafka_sasl_password is not None  # app.settings.load refuses a SASL protocol without one
    return config.kafka_sasl_password.reveal()
