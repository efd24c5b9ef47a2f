"""The exit statuses a worker chooses on purpose, and what a supervisor should do about them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Statuses from sysexits.h; both mean "start me again", for different reasons."""

    #: The input stayed stalled after a resume (app.guards.input_watch): EX_SOFTWARE.
    STALLED = 70
    #: The worker froze past its session and fenced itself (app.guards.fencing): EX_TEMPFAIL.
    FROZEN = 75


#: Why a supervisor restarts a worker that exited with each status.
RESTART_REASONS = {
    ExitCode.STALLED: "its input stalled",
    ExitCode.FROZEN: "it fenced itself after a freeze",
}
