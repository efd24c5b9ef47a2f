"""Crash points for fault-injection tests: ``UBS_FAILPOINT=name:N`` SIGKILLs the worker at the Nth pass.

The ledger's points count input messages and are passed once per checkpoint,
by the number of messages it holds: ``after_results`` (the batch's result rows
acknowledged and written, its accounts not yet), ``after_table_write`` (every
row acknowledged and written, nothing sent), ``after_send`` (outputs
acknowledged, input not yet acknowledged to Faust). The others: ``before_commit`` (Faust is about to flush
and commit offsets), ``after_produce`` (the gateway has Kafka's ack for a
submitted operation but has not answered the client).

``stall_input`` does not kill: after the agent's Nth message it pauses the
worker's input partitions inside Faust, the state a restarted worker was once
found in (docs/fault-injection.md, finding 11), for the progress watch to notice
(app.guards.input_watch). ``stall_input_hard`` also makes Faust's resume do nothing,
so only the watch's last step, a restart, gets the input moving again.

``stall_recovery`` does not kill: Faust's Nth resume of the ``cursors``
changelog is swallowed, so that table recovery waits for records it never
receives (finding 15), for the recovery watch (app.guards.recovery_watch).
``stall_recovery_hard`` swallows every resume from the Nth on.

``raise_in_decision`` does not kill either: the ledger's decision for its Nth
message raises an exception of a class no code expects, as a bug would, for the
agent's firewall to catch (the message is dead-lettered, the partition goes on).
Unset in production; then ``hit`` is one comparison.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable, Optional, Tuple

from faust.sensors import Sensor

from app.settings import settings

log = logging.getLogger(__name__)

POINTS = (
    "after_results",
    "after_table_write",
    "after_send",
    "before_commit",
    "after_produce",
    "stall_input",
    "stall_input_hard",
    "stall_recovery",
    "stall_recovery_hard",
    "raise_in_decision",
)


def parse(spec: Optional[str]) -> Optional[Tuple[str, int]]:
    """``"after_send:3"`` -> ("after_send", 3); None when unset."""
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"UBS_FAILPOINT must be one of {POINTS} followed by ':N' (N >= 1), got {spec!r}")
    return name, int(count)


_armed = parse(settings.failpoint)
_passes = 0


def hit(name: str, action: Optional[Callable[[], None]] = None, passes: int = 1) -> None:
    """Pass a point ``passes`` times; on reaching the armed pass run ``action`` once, or without one die here."""
    global _passes
    if _armed is None or _armed[0] != name:
        return
    before = _passes
    _passes += passes
    if before < _armed[1] <= _passes and action is not None:
        log.warning("failpoint name=%s pass=%s action=%s", name, _passes, getattr(action, "__name__", "call"))
        action()
    elif _passes >= _armed[1] and action is None:
        log.warning("failpoint name=%s pass=%s action=SIGKILL", name, _passes)
        os.kill(os.getpid(), signal.SIGKILL)


class CommitFailpoint(Sensor):
    """Faust sensor that passes ``before_commit`` each time offsets are about to be committed."""

    def on_commit_initiated(self, consumer: Any) -> Any:
        """Called by Faust before it flushes the producer and commits."""
        hit("before_commit")
        return super().on_commit_initiated(consumer)


def armed_point() -> Optional[str]:
    """The name of the armed point, None when none is."""
    return _armed[0] if _armed is not None else None


def armed_pass() -> int:
    """The pass at which the armed point acts (0 when none is armed)."""
    return _armed[1] if _armed is not None else 0


def armed() -> bool:
    """True when a crash point is set for this process."""
    return _armed is not None


class InjectedFailure(RuntimeError):
    """Raised by the ``raise_in_decision`` point: an error no handler was written for."""


def raise_injected() -> None:
    """The action of ``raise_in_decision``: the decision code fails as a bug would."""
    raise InjectedFailure("injected by UBS_FAILPOINT=raise_in_decision")
