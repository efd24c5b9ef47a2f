"""Reading what clients send: one JSON parser and one integer rule for every way in.

HTTP bodies, query and path parameters, and topic messages all pass through here,
so one rule decides what a number is. The parser cannot be made to raise anything
but ``InvalidOperation``, whatever the bytes:

- the text must be UTF-8 (no other encoding is guessed) and must not carry an
  escaped lone surrogate, which is not a character;
- ``NaN`` and ``Infinity`` are not JSON and refuse the whole document;
- a number longer than ``MAX_NUMBER_CHARS`` is never converted (Python refuses
  integers of over 4,300 digits with a ValueError, and the work grows with the
  length): it becomes an ``OversizedNumber`` that no field accepts;
- a key given twice in one object becomes ``REPEATED``, which no field accepts
  and which ``app.core.commands.parse_operation`` reports as ``duplicate_field``.

Markers instead of exceptions keep the document readable, so an operation whose
``amount`` is malformed still names its user and op_id and can be answered.
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Tuple

from app.errors import InvalidOperation

#: Longer than any valid number (2**63 has 19 digits), short enough to convert instantly.
MAX_NUMBER_CHARS = 40

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class OversizedNumber:
    """A JSON number too long to be converted; it stands for itself in error messages."""

    __slots__ = ("chars",)

    def __init__(self, token: str) -> None:
        self.chars = len(token)

    def __repr__(self) -> str:
        return f"<number of {self.chars} characters>"


class Repeated:
    """The value of a key that appears more than once in one object: ambiguous, so unusable."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<key given more than once>"


REPEATED = Repeated()


def _integer(token: str) -> Any:
    return int(token) if len(token) <= MAX_NUMBER_CHARS else OversizedNumber(token)


def _fraction(token: str) -> Any:
    return float(token) if len(token) <= MAX_NUMBER_CHARS else OversizedNumber(token)


def _constant(token: str) -> Any:
    raise InvalidOperation(None, "invalid_json", f"body is not valid JSON: {token} is not a number")


def _object(pairs: List[Tuple[str, Any]]) -> dict:
    body: dict = {}
    for key, value in pairs:
        body[key] = REPEATED if key in body else value
    return body


_decoder = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=_integer, parse_float=_fraction, parse_constant=_constant
)


def decode_json(raw: Optional[bytes]) -> Any:
    """Parse one message body or request body; anything unusable is an InvalidOperation."""
    if raw is None:
        raise InvalidOperation(None, "invalid_json", "the message has no value")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidOperation(None, "invalid_json", f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = _decoder.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidOperation(None, "invalid_json", f"body is not valid JSON: {_brief(exc)}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(document):
        raise InvalidOperation(None, "invalid_json", "body escapes a lone UTF-16 surrogate, which is not text")
    return document


def _brief(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _has_lone_surrogate(document: Any) -> bool:
    pending: List[Any] = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and not _encodable(value):
            return True
    return False


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decimal_text(text: str, maximum: int) -> Optional[int]:
    """The value of a string of ASCII digits when it lies in 1..maximum, else None.

    The length is checked before converting, so no string can make this slow or raise.
    """
    if not (0 < len(text) <= len(str(maximum)) and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value <= maximum else None


def whole_number(value: Any, maximum: int, digits_allowed: bool = False) -> Optional[int]:
    """A decoded JSON value as an integer in 1..maximum, or None.

    ``bool`` is an ``int`` in Python and is refused (``true`` must not become user 1),
    as is every float, even a whole one. With ``digits_allowed`` a string of digits
    counts too: clients whose JSON libraries round large numbers send amounts that way.
    """
    if isinstance(value, str) and digits_allowed:
        return decimal_text(value, maximum)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= maximum else None


def show(value: Any) -> str:
    """A short, safe rendering of a client's value for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (OversizedNumber, Repeated)):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value[:40])
        return text if len(value) <= 40 else text[:-1] + '..."'
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
