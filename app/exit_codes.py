"""The exit statuses a worker chooses on purpose, and what a supervisor should do about them."""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import NoReturn


class ExitCode(IntEnum):
    """Statuses from sysexits.h; all but BAD_CONFIGURATION mean "start me again", each for a different reason."""

    #: A checkpoint's write was not acknowledged while the group coordinator still vouched for this worker's
    #: partitions (app.agents.checkpoint, app.frame.ownership): EX_UNAVAILABLE.
    OWNERSHIP_LAPSED = 69
    #: The input or a table recovery stayed stalled after a resume (app.guards.resume): EX_SOFTWARE.
    STALLED = 70
    #: A checkpoint could not reach Kafka (app.agents.checkpoint): EX_IOERR.
    CHECKPOINT_FAILED = 74
    #: The worker froze past its session and fenced itself (app.frame.fencing): EX_TEMPFAIL.
    FROZEN = 75
    #: The worker refused to start as configured (a setting app.settings refuses; app.web.access: a gateway
    #: open to the network, a bad key file, TLS files that cannot serve): EX_CONFIG. Starting it again
    #: changes nothing until its settings do.
    BAD_CONFIGURATION = 78


#: Why a supervisor restarts a worker that exited with each status.
RESTART_REASONS = {
    ExitCode.STALLED: "its input or a table recovery stalled",
    ExitCode.FROZEN: "it fenced itself after a freeze",
    ExitCode.CHECKPOINT_FAILED: "a checkpoint could not reach Kafka",
    ExitCode.OWNERSHIP_LAPSED: "a checkpoint outlived the word of its group coordinator",
}


def refuse_to_start(reason: str, program: str = "ubscore worker") -> NoReturn:
    """Exit 78 with the reason in one line on stderr: nothing has started that would need stopping.

    One line and no traceback, so that a supervisor's log shows the setting to fix at once.
    """
    sys.stderr.write(f"{program}: refusing to start: {reason}\n")
    raise SystemExit(ExitCode.BAD_CONFIGURATION)
