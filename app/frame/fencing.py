"""Self-fencing of a frozen worker: past half the session timeout, exit instead of writing.

Under at_least_once nothing in Kafka fences an old owner: a worker that was
frozen (SIGSTOP, a paused VM, a stalled host) long enough for the group to hand
its partitions to another worker would, on waking, flush the batches its
producer still buffers and go on applying the records it had already fetched,
writing stale changelog entries and events next to the new owner's. The
coordinator only moves partitions after a full session timeout of silence, so a
freeze shorter than half of it is harmless and a longer one is treated as lost
ownership: the process exits at once, from the first Python instruction it runs
after waking, and its supervisor (or the operator) restarts it; it then rejoins
the group and rebuilds from the changelog like any restarted worker.

A heartbeat thread stamps the time every ``tick_s``. Whoever notices a gap
first acts: the SIGCONT handler (runs in the main thread before any other
Python code there, when the freeze was a SIGSTOP) or the thread itself (any
other freeze); the other one waits for that exit, so the reason line is always
written whole. A worker cut off by the network but not frozen is not caught
here: it stops serving reads past its ownership bound (app.frame.ownership),
and what it may still write is a known limit (docs/design.md, "Known limits").
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Optional

from app.exit_codes import ExitCode


class FreezeWatch:
    """Exit the process when it has been frozen for more than ``limit_s`` seconds."""

    def __init__(self, limit_s: float, tick_s: float = 0.2) -> None:
        self.limit_s = limit_s
        self.tick_s = tick_s
        self._last = time.monotonic()
        self._started = False
        self._exiting = threading.Lock()

    def start(self) -> None:
        """Install the SIGCONT handler and start the heartbeat thread (once)."""
        if self._started:
            return
        self._started = True
        self._last = time.monotonic()
        signal.signal(signal.SIGCONT, self._on_continue)
        threading.Thread(target=self._run, name="freeze-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            self.check("thread")
            self._last = time.monotonic()

    def _on_continue(self, _signum: int, _frame: Optional[FrameType]) -> None:
        self.check("sigcont")

    def check(self, noticed_by: str) -> None:
        """Exit if the last heartbeat is older than the limit."""
        frozen = time.monotonic() - self._last
        if frozen <= self.limit_s:
            return
        if not self._exiting.acquire(timeout=1.0):
            os._exit(ExitCode.FROZEN)  # the other path is saying why and exits; never run on meanwhile
        # Straight to fd 2: a signal handler may interrupt a thread holding the logging lock,
        # and mode replaces sys.stderr with a proxy that has no file descriptor.
        line = (
            f"worker_fenced reason=frozen frozen_s={frozen:.1f} limit_s={self.limit_s:.1f} "
            f"noticed_by={noticed_by} action=exit status={ExitCode.FROZEN}\n"
        )
        try:
            os.write(2, line.encode())
        except OSError:
            pass
        os._exit(ExitCode.FROZEN)
