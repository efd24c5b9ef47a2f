"""The one parser of client input: whatever the bytes, an InvalidOperation or a readable document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.models import read_operation
from app.core.wire import MAX_NUMBER_CHARS, REPEATED, OversizedNumber, decimal_text, decode_json, show, whole_number
from app.errors import InvalidOperation
from tests.hostile import UNTIED, VALID, Case, Catalogue

NO_LIMIT = 10**9
CATALOGUE = Catalogue(user_id=1001, payee=2002).cases()


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.label for case in CATALOGUE])
def test_hostile_message_is_read_as_it_is_owed(case: Case) -> None:
    if case.expect == UNTIED:
        with pytest.raises(InvalidOperation):
            read_operation(case.raw, NO_LIMIT)
        return
    intake = read_operation(case.raw, NO_LIMIT)
    assert (intake.user_id, intake.op_id.startswith("h-")) == (1001, True)
    assert (intake.error is None) == (case.expect == VALID), intake.error


def test_message_over_the_limit_is_refused_unread() -> None:
    raw = json.dumps({"op_id": "a", "kind": "deposit", "user_id": 1, "asset": 1, "amount": 1}).encode()
    with pytest.raises(InvalidOperation) as caught:
        read_operation(raw + b" " * 100, len(raw))
    assert caught.value.reason == "body_too_large"
    assert read_operation(raw, len(raw)).operation is not None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_invalid_operation(raw: bytes) -> None:
    try:
        read_operation(raw, NO_LIMIT)
    except InvalidOperation:
        pass


_json_text = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.sampled_from(["NaN", "1e999", "-0", "9" * 5000, "\\ud800", "\u0000"]),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(_json_text, st.integers(0, 40), st.binary(max_size=3))
def test_mangled_json_raises_nothing_but_invalid_operation(value: Any, cut: int, junk: bytes) -> None:
    text = json.dumps(value, allow_nan=True).encode()
    for raw in (text, text[:cut] + junk + text[cut:], b'{"user_id": 5, "op_id": "x", "kind": ' + text + b"}"):
        try:
            read_operation(raw, NO_LIMIT)
        except InvalidOperation:
            pass


def test_number_longer_than_the_bound_is_never_converted() -> None:
    value = decode_json(b'{"amount": ' + b"9" * 100_000 + b"}")["amount"]
    assert isinstance(value, OversizedNumber) and value.chars == 100_000
    assert decode_json(b"9" * MAX_NUMBER_CHARS) == int("9" * MAX_NUMBER_CHARS)


def test_key_given_twice_is_marked_and_named() -> None:
    assert decode_json(b'{"a": 1, "a": 1}') == {"a": REPEATED}
    intake = read_operation(
        b'{"op_id": "x", "user_id": 5, "kind": "deposit", "asset": 1, "amount": 1, "amount": 2}', 10**6
    )
    assert intake.error is not None and (intake.error.field, intake.error.reason) == ("amount", "duplicate_field")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_numbers_refuse_the_document(constant: bytes) -> None:
    with pytest.raises(InvalidOperation) as caught:
        decode_json(b'{"amount": ' + constant + b"}")
    assert caught.value.reason == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [b'"\\ud800"', b'["ok", {"k": "\\udfff"}]', b'{"\\udc00": 1}', b'"\\udc00\\ud800"'],
)
def test_lone_surrogate_escape_refuses_the_document(raw: bytes) -> None:
    with pytest.raises(InvalidOperation):
        decode_json(raw)


def test_surrogate_pair_is_text() -> None:
    assert decode_json(b'"\\ud83d\\ude00"') == "\U0001f600"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [(b"\xef\xbb\xbf{}", "byte order mark"), ('{"a": 1}'.encode("utf-16"), "UTF-16"), (b'"\xc0\xaf"', "overlong")],
)
def test_only_utf8_is_read(raw: bytes, problem: str) -> None:
    with pytest.raises(InvalidOperation):
        decode_json(raw)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("0001", 1), ("1000", 1000), ("1001", None), ("0", None), ("", None), ("-1", None), ("+1", None)],
)
def test_decimal_text_is_bounded_by_the_maximum(text: str, value: Any) -> None:
    assert decimal_text(text, 1000) == value


def test_decimal_text_refuses_unicode_digits_and_long_strings_without_converting() -> None:
    assert decimal_text("١٢", 1000) is None  # Arabic-Indic digits pass str.isdigit()
    assert decimal_text("²", 1000) is None
    assert decimal_text("9" * 100_000, 2**63 - 1) is None


@pytest.mark.parametrize("value", [True, False, 1.0, None, "5", [5], OversizedNumber("9" * 50), REPEATED])
def test_whole_number_refuses_what_is_not_an_integer(value: Any) -> None:
    assert whole_number(value, 10) is None


def test_whole_number_takes_digit_strings_only_when_asked() -> None:
    assert whole_number("5", 10, digits_allowed=True) == 5
    assert whole_number(5, 10) == 5
    assert whole_number(11, 10) is None


@pytest.mark.parametrize(
    "value", [{"a": 1}, [1] * 10, "x" * 10_000, 10**39, float("inf"), None, OversizedNumber("1" * 99), REPEATED]
)
def test_show_is_short_for_any_value(value: Any) -> None:
    assert len(show(value)) <= 45


def test_show_survives_deep_nesting() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    assert show(deep) == "an array"
