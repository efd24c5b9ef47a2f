"""The exit statuses a worker chooses on purpose, and what a supervisor should do about them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Statuses from sysexits.h; all but BAD_CONFIGURATION mean "start me again", each for a different reason."""

    #: The input or a table recovery stayed stalled after a resume (app.guards.resume): EX_SOFTWARE.
    STALLED = 70
    #: A checkpoint could not reach Kafka (app.agents.checkpoint): EX_IOERR.
    CHECKPOINT_FAILED = 74
    #: The worker froze past its session and fenced itself (app.guards.fencing): EX_TEMPFAIL.
    FROZEN = 75
    #: The worker refused to start as configured (app.web.access: a gateway open to the network, a bad
    #: key file): EX_CONFIG. Starting it again changes nothing until its settings do.
    BAD_CONFIGURATION = 78


#: Why a supervisor restarts a worker that exited with each status.
RESTART_REASONS = {
    ExitCode.STALLED: "its input or a table recovery stalled",
    ExitCode.FROZEN: "it fenced itself after a freeze",
    ExitCode.CHECKPOINT_FAILED: "a checkpoint could not reach Kafka",
}
