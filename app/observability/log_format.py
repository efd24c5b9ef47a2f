"""Log lines as text (``event key=value ...``) or, with ``UBS_LOG_FORMAT=json``, as one JSON object each.

UBSCore logs every event as ``log.info("name key=%s key=%s", ...)``: the format
string names the fields and the arguments carry their values. The JSON form is
read from those two, so a log call is written once and both forms agree; a
field keeps its type (a user_id stays a number), ``%r`` gives the repr, and a
line not written that way (Faust's, aiokafka's) keeps its text as ``message``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Dict, Optional

from mode import Worker

from app.settings import settings

_EVENT = re.compile(r"[a-z][a-z0-9_]*")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)")
_SPEC = re.compile(r"%[-#0 +]?\d*(?:\.\d+)?[sdrfgi]")


def event_fields(msg: Any, args: Any) -> Optional[Dict[str, Any]]:
    """``{"event": name, field: value, ...}`` for a line in the project's form, else None.

    A field written as one placeholder (``user_id=%s``) keeps its argument's type;
    one with text or several placeholders (``missing=%s-%s``, ``resent=true``) is a string.
    """
    if not isinstance(msg, str) or not isinstance(args, tuple):
        return None
    name, _, rest = msg.partition(" ")
    if not _EVENT.fullmatch(name):
        return None
    line: Dict[str, Any] = {"event": name}
    used = 0
    for token in rest.split():
        match = _KEY.fullmatch(token)
        if match is None or "%%" in token:
            return None
        key, template = match.groups()
        count = len(_SPEC.findall(template))
        values = args[used : used + count]
        if len(values) != count:
            return None
        used += count
        line[key] = _value(template, values[0]) if _SPEC.fullmatch(template) else template % values
    return line if used == len(args) else None


def _value(spec: str, arg: Any) -> Any:
    if spec == "%r":
        return repr(arg)
    if arg is None or isinstance(arg, bool):
        return arg
    if isinstance(arg, (int, float)) and spec in ("%s", "%d", "%i"):
        return arg
    if isinstance(arg, (int, float)):
        return float(spec % arg) if spec.endswith(("f", "g")) else arg
    return spec % (arg,)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, then the event's fields or the message text."""

    def format(self, record: logging.LogRecord) -> str:
        line: Dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        line.update(event_fields(record.msg, record.args) or {"message": record.getMessage()})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def install(root: logging.Logger, log_format: str) -> None:
    """Give every handler of the root logger the chosen format (text keeps mode's)."""
    if log_format != "json":
        return
    for handler in root.handlers:
        handler.setFormatter(JsonLineFormatter())


class SinkWorker(Worker):
    """mode's worker for a sink running alone, logging in ``UBS_LOG_FORMAT``."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Called once mode has configured logging."""
        super().on_setup_root_logger(logger, level)
        install(logger, settings.log_format)
