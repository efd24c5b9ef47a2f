"""Dead letters for ``ubscore dlq``: reading them, choosing some, and the operation a replay sends.

Pure functions: the command line reads the topic and talks to the gateway, these
decide. A replay goes through the gateway like any client retry, so validation
and deduplication by op_id apply. A corrected operation cannot reuse its op_id:
the agent answered the bad message under that op_id (a rejected event), and any
later message with it is a duplicate of that answer. So a correction gets an
op_id derived from the original and the corrected operation: the same
correction replayed twice carries the same op_id and applies once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

#: The longest op_id the gateway accepts (app.core.wire).
MAX_OP_ID = 64
#: Letters a replay's op_id carries after the original: ".r" and eight hex digits of the correction.
REPLAY_SUFFIX_CHARS = 10
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class NotReplayable(ValueError):
    """A letter whose value cannot become an operation (not a JSON object, no op_id or user_id)."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of balance.operations.dlq: where it sits, and the letter the agent wrote."""

    partition: int
    offset: int
    #: When the bad message was produced (ms since the epoch); the letter's record time if it has none.
    timestamp_ms: int
    key: Optional[str]
    reason: str
    field: Optional[str]
    message: str
    #: Where the bad message was read: topic, partition, offset.
    source: str
    value: str
    value_truncated: bool

    @property
    def position(self) -> str:
        """The letter's place in the dead-letter topic, as ``--offset`` takes it."""
        return f"{self.partition}:{self.offset}"

    def user_id(self) -> Optional[int]:
        """The user the bad message named: its value's user_id, else its key when that is a user id."""
        body = _json_object(self.value)
        candidate = body.get("user_id") if body is not None else None
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
        if self.key is not None and self.key.isdigit():
            return int(self.key)
        return None

    def to_json(self) -> Dict[str, Any]:
        """The letter as ``--json`` prints it: its place and the agent's letter, fields unchanged."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "key": self.key,
            "error": {"reason": self.reason, "field": self.field, "message": self.message},
            "source": self.source,
            "value": self.value,
            "value_truncated": self.value_truncated,
        }


def letter_from_record(partition: int, offset: int, record_ts_ms: int, value: bytes) -> DeadLetter:
    """A letter from its record; one that is not the agent's JSON still shows, with reason ``unreadable_letter``."""
    letter = _json_object(value.decode("utf-8", errors="replace")) or {}
    found = letter.get("error")
    error: Dict[str, Any] = found if isinstance(found, dict) else {}
    timestamp = letter.get("timestamp")
    source = f"{letter.get('topic')}:{letter.get('partition')}:{letter.get('offset')}" if letter else "?"
    key = letter.get("key")
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp if isinstance(timestamp, int) else record_ts_ms,
        key=key if isinstance(key, str) else None,
        # app.errors.InvalidOperation.as_dict names the reason "error", as the gateway's 4xx bodies do.
        reason=str(error.get("error") or error.get("reason") or "unreadable_letter"),
        field=error.get("field"),
        message=str(error.get("message") or ""),
        source=source,
        value=str(letter.get("value", value.decode("utf-8", errors="replace"))),
        value_truncated=bool(letter.get("value_truncated", False)),
    )


@dataclass(frozen=True)
class Selection:
    """Which letters a command works on; every criterion given must hold."""

    reason: Optional[str] = None
    since_ms: Optional[int] = None
    until_ms: Optional[int] = None
    user: Optional[int] = None
    position: Optional[Tuple[int, int]] = None
    limit: Optional[int] = None


def select(letters: Iterable[DeadLetter], selection: Selection) -> List[DeadLetter]:
    """The letters that match, oldest first (by time, then place), at most ``limit`` of them (the newest)."""
    chosen = [letter for letter in letters if _matches(letter, selection)]
    chosen.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
    if selection.limit is not None:
        chosen = chosen[-selection.limit :] if selection.limit > 0 else []
    return chosen


def _matches(letter: DeadLetter, selection: Selection) -> bool:
    if selection.position is not None and (letter.partition, letter.offset) != selection.position:
        return False
    if selection.reason is not None and letter.reason != selection.reason:
        return False
    if selection.since_ms is not None and letter.timestamp_ms < selection.since_ms:
        return False
    if selection.until_ms is not None and letter.timestamp_ms >= selection.until_ms:
        return False
    return selection.user is None or letter.user_id() == selection.user


def parse_time(text: str, now_ms: int) -> int:
    """Milliseconds since the epoch of an ISO 8601 time (UTC unless it says) or a time ago (``90s``, ``1h``, ``2d``)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_S[relative.group(2)] * 1000
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2026-12-01T10:00) nor a time ago (30m, 1h, 2d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_position(text: str) -> Tuple[int, int]:
    """``PARTITION:OFFSET`` of a letter in the dead-letter topic."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (as dlq list shows it, e.g. 3:17)")
    return int(partition), int(offset)


def parse_correction(text: str) -> Tuple[List[str], Any]:
    """``field=value`` (``buyer.hold_id=...`` nested); the value is JSON when it reads as such, else text."""
    path, sep, raw = text.partition("=")
    fields = path.strip().split(".")
    if not sep or not all(fields):
        raise ValueError(f"{text!r} is not FIELD=VALUE (e.g. amount=5)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return fields, value


def replay_operation(letter: DeadLetter, corrections: Sequence[Tuple[List[str], Any]]) -> Dict[str, Any]:
    """The operation to send again: the letter's value with the corrections; a corrected one with its own op_id."""
    if letter.value_truncated:
        raise NotReplayable("its value was cut when dead-lettered")
    operation = _json_object(letter.value)
    if operation is None:
        raise NotReplayable("its value is not a JSON object")
    if not isinstance(operation.get("op_id"), str) or operation.get("user_id") is None:
        raise NotReplayable("its value has no op_id or no user_id")
    corrected = json.loads(json.dumps(operation))
    for fields, value in corrections:
        _assign(corrected, fields, value)
    if corrections and not any(fields == ["op_id"] for fields, _ in corrections):
        corrected["op_id"] = replay_op_id(operation["op_id"], corrected)
    return corrected


def replay_op_id(original: str, corrected: Dict[str, Any]) -> str:
    """The original op_id (cut to fit) with ``.r`` and a digest of the corrected operation."""
    body = {name: value for name, value in corrected.items() if name != "op_id"}
    digest = hashlib.sha256(json.dumps([original, body], sort_keys=True).encode()).hexdigest()[:8]
    return f"{original[: MAX_OP_ID - REPLAY_SUFFIX_CHARS]}.r{digest}"


def _assign(target: Dict[str, Any], fields: List[str], value: Any) -> None:
    for name in fields[:-1]:
        inner = target.get(name)
        if not isinstance(inner, dict):
            inner = target[name] = {}
        target = inner
    target[fields[-1]] = value


def _json_object(text: str) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
