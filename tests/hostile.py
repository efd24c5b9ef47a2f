"""Hostile input: a generated catalogue of bodies that have broken parsers, shared by every layer's tests.

Each case is raw bytes plus what a correct pipeline owes it:

- ``VALID``: a valid operation (the controls: 1-digit numbers, 19-digit amount strings),
  a result event on the topic, 202 over HTTP.
- ``INVALID``: tied to a (user_id, op_id) but invalid: a rejected event and a dead letter
  on the topic, a 4xx over HTTP.
- ``UNTIED``: cannot be tied to a user: only a dead letter on the topic, a 4xx over HTTP.

A message over the size limit is ``UNTIED`` whatever it holds (``Case.owed``). Every
case of one catalogue has its own op_id, so no case is a retry of another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

VALID = "valid"
INVALID = "invalid"
UNTIED = "untied"

NUMERIC_FIELDS = ("user_id", "asset", "amount", "to_user_id")
STRING_FIELDS = ("op_id", "kind", "source")
#: 1 to 100,000 digits, with the edges that matter: 2**63 has 19, Python's int-string limit is 4,300.
DIGIT_COUNTS = (1, 19, 20, 40, 41, 64, 4_300, 4_301, 5_000, 20_000, 100_000)
HUGE_STRING_CHARS = 200_000
_TOKEN = "@@raw@@"


@dataclass(frozen=True)
class Case:
    """One hostile message: a label for failure reports, its bytes, and what it is owed."""

    label: str
    raw: Optional[bytes]
    expect: str

    @property
    def op_id(self) -> Optional[str]:
        """The catalogue's op_id in this case, read without a JSON parser (the bytes may defeat one)."""
        found = re.search(rb'"op_id": "([A-Za-z0-9-]+)"', self.raw or b"")
        return found.group(1).decode() if found else None

    def owed(self, max_bytes: int) -> str:
        """What this case is owed where messages over ``max_bytes`` are refused unread."""
        return UNTIED if self.raw is not None and len(self.raw) > max_bytes else self.expect


class Catalogue:
    """Builds cases for one user; ``payee`` is the other side of the transfers."""

    def __init__(self, user_id: int, payee: int, prefix: str = "h") -> None:
        self.user_id = user_id
        self.payee = payee
        self.prefix = prefix
        self.count = 0

    def _op_id(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    def _base(self) -> Dict[str, Any]:
        return {
            "op_id": self._op_id(),
            "kind": "transfer",
            "user_id": self.user_id,
            "asset": 1,
            "amount": 5,
            "to_user_id": self.payee,
            "source": "available",
        }

    def with_token(self, field: str, token: str) -> bytes:
        """A transfer whose ``field`` holds ``token`` verbatim as its JSON value."""
        body = self._base()
        body[field] = _TOKEN
        return json.dumps(body).replace(json.dumps(_TOKEN), token, 1).encode("utf-8", "surrogatepass")

    def with_value(self, field: str, value: Any) -> bytes:
        body = self._base()
        body[field] = value
        return json.dumps(body).encode()

    def cases(self) -> List[Case]:
        """The whole catalogue, every class."""
        parts = (self._numbers(), self._strings(), self._structure(), self._encoding(), self._holds_and_trades())
        return [case for part in parts for case in part]

    def _trade(self, **changes: Any) -> Dict[str, Any]:
        body = {
            "op_id": self._op_id(),
            "kind": "trade",
            "user_id": self.user_id,
            "buyer": {"user_id": self.user_id, "hold_id": "bid"},
            "seller": {"user_id": self.payee, "hold_id": "ask"},
            "base_asset": 1,
            "quote_asset": 2,
            "base_amount": 50,
            "quote_amount": 70,
            "buyer_fee": 1,
            "seller_fee": 2,
            "fee_account": self.payee + 1,
        }
        body.update(changes)
        return body

    def _holds_and_trades(self) -> Iterator[Case]:
        """The fields of holds and trades, each given what breaks parsers; nested ones too."""
        yield Case("trade: valid", json.dumps(self._trade()).encode(), VALID)
        lock = {"op_id": "", "kind": "lock", "user_id": self.user_id, "asset": 1, "amount": 5, "hold_id": "h"}
        yield Case("lock: valid hold", json.dumps({**lock, "op_id": self._op_id()}).encode(), VALID)
        hostile: List[Any] = [
            "9" * 20,
            -5,
            5.0,
            True,
            None,
            "5x",
            "x" * HUGE_STRING_CHARS,
            [5],
            {"value": 5},
            "dépôt",
        ]
        for field in ("base_amount", "quote_amount", "buyer_fee", "seller_fee", "fee_account", "base_asset"):
            for value in hostile:
                if not (field == "fee_account" and value is None):  # no fee account with fees: still invalid
                    yield Case(
                        f"trade {field}: {json.dumps(value)[:20]}",
                        json.dumps(self._trade(**{field: value})).encode(),
                        INVALID,
                    )
        for side in ("buyer", "seller"):
            for inner, value in (
                ("hold_id", "x" * HUGE_STRING_CHARS),
                ("hold_id", 7),
                ("hold_id", "a b"),
                ("user_id", "1"),
            ):
                party = {**self._trade()[side], inner: value}
                yield Case(
                    f"trade {side}.{inner}: {json.dumps(value)[:20]}",
                    json.dumps(self._trade(**{side: party})).encode(),
                    INVALID,
                )
            yield Case(f"trade {side}: array", json.dumps(self._trade(**{side: [1, 2]})).encode(), INVALID)
        yield Case("trade: release_rest string", json.dumps(self._trade(release_rest="yes")).encode(), INVALID)
        yield Case(
            "trade: self trade",
            json.dumps(self._trade(seller={"user_id": self.user_id, "hold_id": "a"})).encode(),
            INVALID,
        )
        for value in ("x" * HUGE_STRING_CHARS, 7, "dépôt", "", None):
            yield Case(
                f"lock hold_id: {json.dumps(value)[:20]}",
                json.dumps({**lock, "op_id": self._op_id(), "hold_id": value}).encode(),
                INVALID,
            )
        for value in (0, -1, 1.5, "soon", 10**20):
            body = {**lock, "op_id": self._op_id(), "expires_at_ms": value}
            yield Case(f"lock expires_at_ms: {json.dumps(value)}", json.dumps(body).encode(), INVALID)
        lone = json.dumps({**lock, "op_id": self._op_id()}).replace('"hold_id": "h"', '"hold_id": "\\ud800"')
        yield Case("lock hold_id: lone surrogate", lone.encode(), UNTIED)

    def _owed(self, field: str) -> str:
        return UNTIED if field in ("user_id", "op_id") else INVALID

    def _numbers(self) -> Iterator[Case]:
        for field in NUMERIC_FIELDS:
            owed = self._owed(field)
            for digits in DIGIT_COUNTS:
                if not (field == "user_id" and digits == 1):  # user 9 is not this catalogue's user
                    expect = VALID if digits == 1 else owed
                    yield Case(f"{field}: {digits} digits", self.with_token(field, "9" * digits), expect)
                yield Case(f"{field}: -{digits} digits", self.with_token(field, "-" + "9" * digits), owed)
            for token in ("1e400", "1E-400", "-0", "0e0", "5.0", "5e0", "1" + "0" * 5_000 + ".5", "1e" + "9" * 5_000):
                shown = token if len(token) < 30 else f"{token[:10]}...({len(token)} chars)"
                yield Case(f"{field}: {shown}", self.with_token(field, token), owed)
            yield Case(f"{field}: 100,000 decimals", self.with_token(field, "0." + "0" * 100_000 + "1"), owed)
            for constant in ("NaN", "Infinity", "-Infinity"):
                yield Case(f"{field}: {constant}", self.with_token(field, constant), UNTIED)
            for value in (True, None, [5], {"value": 5}, "5x", "", " 5"):
                yield Case(f"{field}: {json.dumps(value)}", self.with_value(field, value), owed)
        for digits in (19, 20, 4_301, 100_000):
            expect = VALID if digits == 19 else INVALID
            yield Case(f"amount: string of {digits} digits", self.with_value("amount", "1" * digits), expect)

    def _strings(self) -> Iterator[Case]:
        for field in STRING_FIELDS:
            owed = self._owed(field)
            yield Case(f"{field}: huge string", self.with_value(field, "x" * HUGE_STRING_CHARS), owed)
            yield Case(f"{field}: NUL escape", self.with_value(field, "a\u0000b"), owed)
            yield Case(f"{field}: lone surrogate", self.with_token(field, '"a\\ud800b"'), UNTIED)
            yield Case(f"{field}: reversed pair", self.with_token(field, '"\\udc00\\ud800"'), UNTIED)
            yield Case(f"{field}: non-ASCII", self.with_value(field, "dépôt"), owed)
            yield Case(f"{field}: number", self.with_value(field, 12), owed)
        yield Case("unknown field with a huge name", self.with_value("x" * HUGE_STRING_CHARS, 1), INVALID)
        yield Case("unknown field with a lone surrogate", self.with_token("extra", '"\\udfff"'), UNTIED)
        yield Case("valid surrogate pair in an unknown field", self.with_token("extra", '"\\ud83d\\ude00"'), INVALID)

    def _structure(self) -> Iterator[Case]:
        for field in NUMERIC_FIELDS + STRING_FIELDS:
            twice = f"1, {json.dumps(field)}: 2"
            yield Case(f"{field}: given twice", self.with_token(field, twice), self._owed(field))
        same = self.with_value("amount", 5).replace(b'"amount": 5', b'"amount": 5, "amount": 5')
        yield Case("amount: given twice, same value", same, INVALID)
        yield Case("amount: 100 nested arrays", self.with_token("amount", "[" * 100 + "]" * 100), INVALID)
        for depth in (100, 5_000, 100_000):
            yield Case(f"body: {depth} nested arrays", ("[" * depth + "]" * depth).encode(), UNTIED)
            yield Case(f"body: {depth} nested objects", ('{"a":' * depth + "1" + "}" * depth).encode(), UNTIED)
            yield Case(f"amount: {depth} unclosed arrays", self.with_token("amount", "[" * depth), UNTIED)
        for depth in (5_000, 100_000):
            yield Case(f"amount: {depth} nested arrays", self.with_token("amount", "[" * depth + "]" * depth), UNTIED)
        for top in ("null", "true", "1", '"deposit"', "[]", "[{}]", "1.5", "{}", "9" * 5_000):
            yield Case(f"top level: {top[:20]}", top.encode(), UNTIED)

    def _encoding(self) -> Iterator[Case]:
        valid = self.with_value("amount", 5)
        yield Case("no value at all", None, UNTIED)
        yield Case("empty", b"", UNTIED)
        yield Case("whitespace", b" \n\t ", UNTIED)
        yield Case("NUL bytes", b"\x00" * 64, UNTIED)
        yield Case("NUL before the body", b"\x00" + valid, UNTIED)
        yield Case("NUL after the body", valid + b"\x00", UNTIED)
        yield Case("invalid UTF-8 byte", b"\xff" + valid, UNTIED)
        transfer = json.dumps("transfer").encode()
        yield Case("invalid UTF-8 inside a string", valid.replace(transfer, b'"tr\xffansfer"'), UNTIED)
        yield Case("overlong UTF-8", valid.replace(transfer, b'"\xc0\xaf"'), UNTIED)
        yield Case("UTF-8 encoded surrogate", valid.replace(transfer, b'"\xed\xa0\x80"'), UNTIED)
        yield Case("truncated UTF-8", valid[:-1] + b"\xe2\x82", UNTIED)
        yield Case("UTF-8 byte order mark", b"\xef\xbb\xbf" + valid, UNTIED)
        yield Case("UTF-16", valid.decode().encode("utf-16"), UNTIED)
        yield Case("trailing garbage", valid + b"]", UNTIED)
        yield Case("two documents", valid + valid, UNTIED)
        yield Case("truncated", valid[: len(valid) // 2], UNTIED)
