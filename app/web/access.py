"""The API keys in force in this worker: read at start, read again on SIGHUP, asked by every view.

The decisions are app.web.auth's; this module is its edge: it reads the key
file, keeps the keyring a reload replaces whole (a request sees the old keys or
the new, never a mix), decides at start whether the gateway may face the network
as configured, and says so in the log. A key file that cannot be used stops a
starting worker, but never a running one: there a reload keeps the keys it had.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator, Optional, Tuple

from app.errors import ConfigurationError
from app.exit_codes import refuse_to_start
from app.settings import Settings, settings
from app.web.auth import (
    Exposure,
    Key,
    KeyFileError,
    Keyring,
    Verdict,
    decide,
    exposure,
    find,
    keyring,
    parse_keys,
    presented_secret,
)

log = logging.getLogger(__name__)

_ring: Optional[Keyring] = None


def read_keys(path: str) -> Tuple[Key, ...]:
    """The keys of a key file; ConfigurationError naming the file and what is wrong with it."""
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigurationError(f"UBS_API_KEYS_FILE {path}: cannot be read: {exc.strerror}") from None
    try:
        return parse_keys(text)
    except KeyFileError as exc:
        raise ConfigurationError(f"UBS_API_KEYS_FILE {path}: {exc}") from None


def load(config: Settings) -> Keyring:
    """The keyring the settings configure: the file's keys and the token's."""
    file_keys = None if config.api_keys_file is None else read_keys(config.api_keys_file)
    try:
        return keyring(file_keys, None if config.api_token is None else config.api_token.reveal())
    except KeyFileError as exc:
        raise ConfigurationError(f"UBS_API_KEYS_FILE {config.api_keys_file} with UBS_API_TOKEN: {exc}") from None


def current() -> Keyring:
    """The keys in force; read from the settings on first use when no worker start read them."""
    global _ring
    if _ring is None:
        _ring = load(settings)
    return _ring


def verdict(authorization: Optional[str], scopes: Tuple[str, ...], users: Iterable[int] = ()) -> Verdict:
    """What the keys in force say to a request with this Authorization header (app.web.auth.decide)."""
    ring = current()
    key = find(ring, presented_secret(authorization)) if ring.enforced else None
    return decide(ring, key, scopes, users)


@contextlib.contextmanager
def refusing_to_start() -> Iterator[None]:
    """Around a start's checks (``start``, the TLS contexts): a ConfigurationError exits 78 in one line on stderr."""
    try:
        yield
    except ConfigurationError as exc:
        refuse_to_start(str(exc))


def start(bind: str, config: Settings = settings) -> Exposure:
    """At a worker's start, before it serves anything: the keys, and whether it may face the network at ``bind``.

    Raises ConfigurationError to refuse the start (a bad key file, or a
    non-loopback bind without any key and without ``UBS_INSECURE=1``). A gateway
    with a certificate (``UBS_WEB_TLS_CERTFILE``) serves no plain HTTP.
    """
    global _ring
    ring = load(config)
    seen = exposure(bind, ring.enforced, config.insecure, config.web_behind_proxy, config.web_tls)
    if seen.refusal is not None:
        raise ConfigurationError(seen.refusal)
    _ring = ring
    return seen


def announce(seen: Exposure, config: Settings = settings) -> None:
    """The start's first log lines: how open the gateway is, then whether it serves plain HTTP to the network."""
    if seen.insecure:
        log.warning(
            "gateway_insecure web_host=%s keys=0 note=%r",
            seen.bind,
            "UBS_INSECURE=1: no API key, anyone who reaches this address may do anything",
        )
    elif seen.open:
        log.warning(
            "gateway_open web_host=%s keys=0 note=%r",
            seen.bind,
            "no API key configured: every request is allowed, for development on this machine only",
        )
    else:
        log.info("api_keys_loaded keys=%s file=%s", len(current().keys), config.api_keys_file)
    if config.web_tls:
        # The files' names only: the key's content is read by the TLS context and goes nowhere else.
        log.info(
            "gateway_tls url=%s certfile=%s cafile=%s",
            config.canonical_url,
            config.web_tls_certfile,
            config.web_tls_cafile,
        )
    if seen.plain_http:
        log.warning(
            "gateway_plain_http web_host=%s note=%r",
            seen.bind,
            "serving plain HTTP to the network: set UBS_WEB_TLS_CERTFILE and UBS_WEB_TLS_KEYFILE, or put a "
            "TLS-terminating proxy in front and set UBS_WEB_BEHIND_PROXY=1",
        )


def reload(config: Settings = settings) -> None:
    """On SIGHUP: the keys read again; a file that cannot be used keeps the keys in force, in one line saying why."""
    global _ring
    try:
        ring = load(config)
    except ConfigurationError as exc:
        log.error("api_keys_reload_failed kept=%s error=%r", len(current().keys), str(exc))
        return
    _ring = ring
    log.info("api_keys_reloaded keys=%s file=%s", len(ring.keys), config.api_keys_file)
