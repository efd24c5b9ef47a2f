"""TLS of the gateway: the context it serves HTTPS with, and the one every client of a gateway checks it with.

A worker with ``UBS_WEB_TLS_CERTFILE`` serves HTTPS and advertises an https URL
(app.settings.canonical_url), so other workers' routed reads reach it over TLS.
Every HTTP client of a gateway, the gateway's own calls to other workers
(app.web.peers), the ``ubscore`` commands and ``ubscore verify``, comes from
``client_session`` here: an https gateway is checked against ``UBS_WEB_TLS_CAFILE``
(the system's CAs when unset) and for the host name it is reached by, and a unit
test refuses a client session made anywhere else in app/. Both contexts refuse
anything older than TLS 1.2.

The files are read when a context is built: a worker builds both at start
(app.faust_app), so files that cannot serve stop it there with one line naming
them and the reason, never their content.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any, NoReturn, Optional

import aiohttp

from app.errors import ConfigurationError
from app.settings import Settings, settings

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: Where in CPython an ssl error was raised, which tells an operator nothing.
_SOURCE_LINE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def server_context(config: Settings = settings) -> Optional[ssl.SSLContext]:
    """The context the gateway serves with; None when it serves plain HTTP (no certificate configured).

    The settings refuse a certificate without its key; this refuses a key that is
    not the certificate's, an encrypted one (a worker has no one to ask for its
    passphrase) and files that are not PEM.
    """
    if config.web_tls_certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSION
    files = f"UBS_WEB_TLS_CERTFILE {config.web_tls_certfile} with UBS_WEB_TLS_KEYFILE {config.web_tls_keyfile}"
    try:
        context.load_cert_chain(config.web_tls_certfile, config.web_tls_keyfile, password=_no_passphrase)
    except _Encrypted:
        encrypted = "the key is encrypted; give it unencrypted, in a file the worker alone may read"
        raise ConfigurationError(f"{files}: {encrypted}") from None
    except OSError as exc:  # ssl.SSLError too
        raise ConfigurationError(f"{files}: cannot serve TLS: {_reason(exc)}") from None
    return context


def client_context(config: Settings = settings) -> ssl.SSLContext:
    """How a client checks a gateway: a certificate from the CAs of ``UBS_WEB_TLS_CAFILE``, for the host it calls."""
    try:
        context = ssl.create_default_context(cafile=config.web_tls_cafile)
    except OSError as exc:  # ssl.SSLError too
        raise ConfigurationError(f"UBS_WEB_TLS_CAFILE {config.web_tls_cafile}: no CA in it: {_reason(exc)}") from None
    context.minimum_version = MINIMUM_VERSION
    return context


def client_session(
    config: Settings = settings, limit: int = 100, limit_per_host: int = 0, **options: Any
) -> aiohttp.ClientSession:
    """An HTTP client of gateways: https checked by ``client_context``, at most ``limit`` connections at once.

    Made inside the running loop, which it is bound to; ``options`` go to the session (timeout, headers).
    """
    connector = aiohttp.TCPConnector(ssl=client_context(config), limit=limit, limit_per_host=limit_per_host)
    return aiohttp.ClientSession(connector=connector, **options)


def describe(exc: BaseException) -> str:
    """A failed call to a gateway in one line, a TLS failure named as one (its certificate, or the handshake)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: its certificate was refused: {getattr(exc.certificate_error, 'verify_message', None) or exc}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS: the handshake failed: {_reason(exc.os_error) if exc.os_error else exc}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS: {exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Encrypted(Exception):
    """The key file asked for a passphrase."""


def _no_passphrase() -> NoReturn:
    raise _Encrypted()


def _reason(exc: OSError) -> str:
    """What OpenSSL or the system says, without the path (named by the caller) and without any file content."""
    if isinstance(exc, ssl.SSLError):
        text = _SOURCE_LINE.sub("", str(exc.args[-1]) if exc.args else "")
        # OpenSSL's "PEM lib" is all it says of a file that is not PEM, or of a certificate given as the key.
        return "a file is not PEM, or the key file holds no private key" if text.endswith("PEM lib") else text
    return exc.strerror or type(exc).__name__
