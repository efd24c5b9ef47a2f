"""What the operator commands print: plain aligned tables and one line per event.

Plain text without terminal codes, so the output reads the same in a terminal,
a log and a test; ``--json`` gives the data itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence

from app.observability.consumer_lag import PartitionLag
from app.tools.dlq import DeadLetter

#: Event fields ``tail`` shows, in this order, when the event has them.
EVENT_FIELDS = (
    "seq",
    "op_id",
    "kind",
    "status",
    "reason",
    "asset",
    "amount",
    "available",
    "locked",
    "counterparty",
    "hold_id",
    "role",
)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, numbers to the right."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(headers))] + [line(row) for row in cells])


def account_text(account: Mapping[str, Any]) -> str:
    """GET /accounts/{user}: balances per asset, then the open holds (the first ones, and a line if there are more)."""
    balances = sorted(account.get("balances", {}).items(), key=lambda item: int(item[0]))
    rows = [[int(asset), balance["available"], balance["locked"]] for asset, balance in balances]
    headers = ["asset", "available", "locked"]
    if any("code" in balance for _, balance in balances):
        headers.insert(1, "code")
        for row, (_, balance) in zip(rows, balances, strict=True):
            row.insert(1, balance.get("code", "-"))
    parts = [f"user {account['user_id']}  seq {account['seq']}", table(headers, rows)]
    holds = account.get("holds") or []
    if holds:
        hold_rows = [[h["hold_id"], h["asset"], h["remaining"], _time(h.get("expires_at_ms"))] for h in holds]
        parts.append(table(["hold", "asset", "remaining", "expires"], hold_rows))
        if account.get("holds_more"):
            parts.append(f"more open holds after {holds[-1]['hold_id']}: GET /accounts/{account['user_id']}/holds")
    else:
        parts.append("no open holds")
    return "\n".join(parts)


def lag_text(lags: Mapping[str, Sequence[PartitionLag]]) -> str:
    """Every partition of each consumer, then each consumer's total."""
    rows = [
        [row.consumer, row.topic, row.partition, row.end, "-" if row.committed is None else row.committed, row.lag]
        for rows in lags.values()
        for row in rows
    ]
    totals = [
        [consumer, rows[0].group if rows else "-", len(rows), sum(r.lag for r in rows)]
        for consumer, rows in lags.items()
    ]
    return "\n\n".join(
        [
            table(["consumer", "topic", "partition", "end", "committed", "lag"], rows),
            table(["consumer", "group", "partitions", "lag"], totals),
        ]
    )


def lag_json(lags: Mapping[str, Sequence[PartitionLag]]) -> Dict[str, Any]:
    """The same as data: per consumer its group, total and partitions."""
    return {
        consumer: {
            "group": rows[0].group if rows else None,
            "lag": sum(row.lag for row in rows),
            "partitions": [
                {
                    "topic": row.topic,
                    "partition": row.partition,
                    "end": row.end,
                    "committed": row.committed,
                    "beginning": row.beginning,
                    "lag": row.lag,
                }
                for row in rows
            ],
        }
        for consumer, rows in lags.items()
    }


def letters_text(letters: Sequence[DeadLetter]) -> str:
    """One row per dead letter: where, when, why, whose, and the start of its value."""
    rows = [
        [
            letter.position,
            _time(letter.timestamp_ms),
            letter.reason,
            letter.field or "-",
            letter.user_id() or "-",
            _clip(letter.value, 60),
        ]
        for letter in letters
    ]
    return table(["letter", "time", "reason", "field", "user", "value"], rows)


def event_line(event: Mapping[str, Any]) -> str:
    """One event in one line: ``key=value`` for the fields it has, ``changes`` for a trade."""
    parts = [f"{name}={event[name]}" for name in EVENT_FIELDS if event.get(name) is not None]
    for change in event.get("changes") or []:
        parts.append(f"asset{change['asset']}={change['available']}/{change['locked']}")
    return f"{_time(event.get('ts'))}  " + " ".join(parts)


def _time(ms: Optional[int]) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__: List[str] = ["account_text", "event_line", "lag_json", "lag_text", "letters_text", "table"]
