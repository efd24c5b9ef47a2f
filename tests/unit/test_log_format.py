"""Log lines in JSON: the fields come from the format string and its arguments, and every log call fits the form."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path
from typing import Iterator, Tuple

from app.observability.log_format import JsonLineFormatter, event_fields

APP = Path(__file__).resolve().parents[2] / "app"
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


def test_fields_keep_their_types_and_reprs() -> None:
    line = event_fields(
        "event user_id=%s op_id=%s reason=%s delay_s=%.1f error=%r", (1001, "dep-1", None, 1.26, KeyError("x"))
    )
    assert line == {
        "event": "event",
        "user_id": 1001,
        "op_id": "dep-1",
        "reason": None,
        "delay_s": 1.3,
        "error": "KeyError('x')",
    }


def test_literal_and_composite_fields_are_text() -> None:
    assert event_fields("input_gap topic=%s missing=%s-%s resent=true", ("t", 3, 9)) == {
        "event": "input_gap",
        "topic": "t",
        "missing": "3-9",
        "resent": "true",
    }


def test_lines_of_another_form_are_not_events() -> None:
    assert event_fields("Consumer %s started", ("x",)) is None  # Faust's, aiokafka's: kept as text
    assert event_fields("event a=%s", (1, 2)) is None  # an argument left over
    assert event_fields("event a=%s b=%s", (1,)) is None  # one missing
    assert event_fields("event a=%s", {"a": 1}) is None


def test_a_record_becomes_one_json_object() -> None:
    formatter = JsonLineFormatter()
    record = logging.LogRecord(
        "app.agents.ubscore", logging.WARNING, __file__, 1, "dead_letter partition=%s offset=%s", (3, 42), None
    )
    line = json.loads(formatter.format(record))
    assert line["event"] == "dead_letter" and line["partition"] == 3 and line["offset"] == 42
    assert line["level"] == "warning" and line["logger"] == "app.agents.ubscore" and line["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unexpected %s", ("thing",), sys.exc_info())
    line = json.loads(formatter.format(failed))
    assert line["message"] == "Unexpected thing" and "ValueError: boom" in line["exception"]
    assert "\n" not in formatter.format(failed)  # one line, whatever the traceback


def log_calls() -> Iterator[Tuple[str, int, str, int]]:
    """Every ``log.<level>("...", args...)`` in app/: file, line, format string, number of arguments."""
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in LEVELS or not isinstance(node.func.value, ast.Name) or node.func.value.id != "log":
                continue
            first = node.args[0] if node.args else None
            text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
            yield str(path.relative_to(APP.parent)), node.lineno, text or "<not a constant string>", len(node.args) - 1


def test_every_log_call_of_the_app_is_an_event_with_named_fields() -> None:
    calls = list(log_calls())
    assert len(calls) > 40  # the scan finds the project's log calls
    wrong = [
        f"{path}:{line}: {text!r}"
        for path, line, text, count in calls
        if event_fields(text, tuple(range(count))) is None
    ]
    assert not wrong, "log calls not in the form 'event key=%s ...':\n" + "\n".join(wrong)
