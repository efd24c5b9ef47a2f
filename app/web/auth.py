"""API keys and what each may do: parsed, looked up and decided here, without I/O.

A key file names each key by the sha256 of its secret, never the secret, so the
file (or a backup, or a log of it) gives nobody a working key. A request presents
``Authorization: Bearer <secret>``; the secret's digest is compared with every
key's in constant time, so neither the answer's timing nor its content tells how
close a guess came. The views (app.web.views) ask ``decide`` before they read,
forward or produce anything, and ``app.web.access`` holds the keys in force.

A key grants scopes, and its ``users`` ranges (inclusive; every user when absent)
bound every user-facing scope: an operation is allowed only when every user it
names is in them. With no key configured at all the gateway is open (a loopback
worker for development, app.web.access refuses anything else); once any key is,
every request needs one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from app.core.models import MAX_ID
from app.core.wire import decode_json, show, whole_number
from app.errors import InvalidOperation

OPERATIONS_WRITE = "operations:write"
ACCOUNTS_READ = "accounts:read"
ASSETS_WRITE = "assets:write"
OPERATOR = "operator"
METRICS_READ = "metrics:read"
SCOPES = (OPERATIONS_WRITE, ACCOUNTS_READ, ASSETS_WRITE, OPERATOR, METRICS_READ)

#: The key ``UBS_API_TOKEN`` stands for: every scope, every user, as the token always could.
TOKEN_KEY_ID = "UBS_API_TOKEN"
_KEY_FIELDS = frozenset(("id", "sha256", "scopes", "users"))
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BEARER = re.compile(r"bearer +(\S+)", re.IGNORECASE)

Ranges = Tuple[Tuple[int, int], ...]


class KeyFileError(ValueError):
    """A key file that cannot be used, with what is wrong in it (never a secret or a digest)."""


@dataclass(frozen=True)
class Key:
    """One key: its name for logs, the digest of its secret, its scopes and its users (None: all)."""

    id: str
    sha256: str
    scopes: FrozenSet[str]
    users: Optional[Ranges] = None

    def covers(self, user_id: int) -> bool:
        """Whether the user is in one of the key's ranges."""
        return self.users is None or any(first <= user_id <= last for first, last in self.users)

    def to_json(self) -> Dict[str, Any]:
        """The entry a key file holds for this key."""
        entry: Dict[str, Any] = {"id": self.id, "sha256": self.sha256, "scopes": sorted(self.scopes)}
        if self.users is not None:
            entry["users"] = [list(pair) for pair in self.users]
        return entry


@dataclass(frozen=True)
class Keyring:
    """The keys in force; ``enforced`` is False only when none is configured, and then nothing is refused."""

    keys: Tuple[Key, ...]
    enforced: bool


OPEN = Keyring((), enforced=False)


@dataclass(frozen=True)
class Verdict:
    """What ``decide`` answered: 200 allowed, 401 no valid key, 403 a missing scope or a user out of range."""

    status: int
    key_id: Optional[str]
    message: str = ""
    scope: Optional[str] = None
    user_id: Optional[int] = None

    @property
    def allowed(self) -> bool:
        """True when the request may go on."""
        return self.status == 200

    def headers(self) -> Dict[str, str]:
        """A 401 names the scheme it wants (RFC 6750)."""
        return {"WWW-Authenticate": 'Bearer realm="ubscore"'} if self.status == 401 else {}

    def body(self) -> Dict[str, Any]:
        """The JSON body of a refusal: it names the scope or the user, never the key or its secret."""
        body: Dict[str, Any] = {"error": "unauthorized" if self.status == 401 else "forbidden", "field": None}
        body["message"] = self.message
        if self.scope is not None:
            body["scope"] = self.scope
        if self.user_id is not None:
            body["user_id"] = self.user_id
        return body


def digest(secret: str) -> str:
    """The hex sha256 a key file records for a secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def presented_secret(header: Optional[str]) -> Optional[str]:
    """The secret of an ``Authorization: Bearer <secret>`` header; None for no header or another scheme."""
    match = _BEARER.fullmatch(header.strip()) if header else None
    return match.group(1) if match else None


def find(ring: Keyring, secret: Optional[str]) -> Optional[Key]:
    """The key whose digest is the secret's, comparing with every key in constant time."""
    if secret is None:
        return None
    presented = digest(secret).encode()
    found = None
    for key in ring.keys:  # no early exit: the time taken does not depend on which key matched
        if hmac.compare_digest(presented, key.sha256.encode()):
            found = key
    return found


def decide(ring: Keyring, key: Optional[Key], scopes: Sequence[str], users: Iterable[int] = ()) -> Verdict:
    """Whether ``key`` may make a request that needs one of ``scopes`` (none: any key) for ``users``.

    ``key`` is what ``find`` returned for the request's secret; the first scope
    listed is the one a refusal names.
    """
    if not ring.enforced:
        return Verdict(200, None)
    if key is None:
        return Verdict(401, None, "a valid 'Authorization: Bearer <secret>' header is required")
    if scopes and not key.scopes.intersection(scopes):
        return Verdict(403, key.id, f"this key lacks the scope {' or '.join(scopes)}", scope=scopes[0])
    for user_id in users:
        if not key.covers(user_id):
            return Verdict(403, key.id, f"this key does not cover user {user_id}", user_id=user_id)
    return Verdict(200, key.id)


def keyring(file_keys: Optional[Sequence[Key]], token: Optional[str]) -> Keyring:
    """The keys in force: the file's (None: no file configured) and the token's, open when neither is set."""
    if file_keys is None and token is None:
        return OPEN
    keys = list(file_keys or ())
    if token is not None:
        keys.append(Key(TOKEN_KEY_ID, digest(token), frozenset(SCOPES)))
    _refuse_repeats(keys)
    return Keyring(tuple(keys), enforced=True)


def parse_keys(text: bytes) -> Tuple[Key, ...]:
    """The keys of a key file, ``{"keys": [{"id", "sha256", "scopes", "users"?}, ...]}``, or KeyFileError.

    Unknown fields are refused: a misspelt ``users`` must not grant every user.
    """
    try:
        document = decode_json(text)
    except InvalidOperation as error:
        raise KeyFileError(error.message.replace("body", "the file", 1)) from None
    if not isinstance(document, dict) or set(document) != {"keys"}:
        raise KeyFileError('the file must be a JSON object with one field, "keys"')
    entries = document["keys"]
    if not isinstance(entries, list):
        raise KeyFileError('"keys" must be a list of keys')
    keys = [_key(entry, index) for index, entry in enumerate(entries)]
    _refuse_repeats(keys)
    return tuple(keys)


def _key(entry: Any, index: int) -> Key:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where} must be an object")
    unknown = sorted(str(name) for name in set(entry) - _KEY_FIELDS)
    if unknown:
        raise KeyFileError(f"{where} has unknown field {show(unknown[0])}")
    key_id = entry.get("id")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"{where}.id must be 1-64 of A-Z a-z 0-9 . _ : -")
    where = f"key {key_id!r}"
    sha256 = entry.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        # The value is never shown: a secret pasted here by mistake must not reach a log.
        raise KeyFileError(f"{where}: sha256 must be 64 hex digits, the sha256 of the secret")
    return Key(key_id, sha256.lower(), _scopes(entry.get("scopes"), where), _ranges(entry, where))


def _scopes(value: Any, where: str) -> FrozenSet[str]:
    if not isinstance(value, list) or not value:
        raise KeyFileError(f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)}")
    for scope in value:
        if scope not in SCOPES:
            raise KeyFileError(f"{where}: unknown scope {show(scope)} (known: {', '.join(SCOPES)})")
    return frozenset(value)


def _ranges(entry: Dict[str, Any], where: str) -> Optional[Ranges]:
    if "users" not in entry:
        return None
    value = entry["users"]
    if not isinstance(value, list):
        raise KeyFileError(f"{where}: users must be a list of [first, last] user id ranges")
    return tuple(_pair(pair, where) for pair in value)


def _pair(pair: Any, where: str) -> Tuple[int, int]:
    first, last = (whole_number(bound, MAX_ID) for bound in pair) if _is_pair(pair) else (None, None)
    if first is None or last is None:
        raise KeyFileError(f"{where}: users has {show(pair)}, not a [first, last] pair of user ids 1..{MAX_ID}")
    if first > last:
        raise KeyFileError(f"{where}: users has [{first}, {last}], whose first is above its last")
    return first, last


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _refuse_repeats(keys: Sequence[Key]) -> None:
    ids: List[str] = [key.id for key in keys]
    repeated = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if repeated:
        raise KeyFileError(f"key id {repeated[0]!r} is given more than once")
    digests = [key.sha256 for key in keys]
    shared = [key.id for key in keys if digests.count(key.sha256) > 1]
    if shared:
        raise KeyFileError(f"keys {' and '.join(repr(key_id) for key_id in shared)} have the same secret")


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine alone; a host name other than localhost counts as not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Exposure:
    """How a worker's gateway faces the network at start, from its bind address and settings.

    ``refusal`` says why it must not start: reachable from other machines with
    no key configured, and no ``UBS_INSECURE=1`` to say that is meant.
    """

    bind: str
    open: bool
    insecure: bool
    plain_http: bool
    refusal: Optional[str]


def exposure(bind: str, keys_configured: bool, insecure: bool, behind_proxy: bool, tls: bool) -> Exposure:
    """Decide the start: loopback without keys runs open, elsewhere keys are needed unless insecure is asked.

    Beyond loopback, a gateway serves plain HTTP unless it serves TLS itself or a proxy in front does.
    """
    local = is_loopback(bind)
    refusal = None
    if not local and not keys_configured and not insecure:
        refusal = (
            f"the gateway binds {bind}, not a loopback address, and no API key is configured: set UBS_API_KEYS_FILE "
            "(or UBS_API_TOKEN), or UBS_INSECURE=1 to let anyone who reaches it do anything"
        )
    return Exposure(
        bind=bind,
        open=not keys_configured,
        insecure=not local and not keys_configured and insecure,
        plain_http=not local and not behind_proxy and not tls,
        refusal=refusal,
    )
