"""The freeze watch: a process stopped past its limit exits on waking; a short stop is harmless."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from app.exit_codes import ExitCode

CHILD = """
import sys, time
from app.frame.fencing import FreezeWatch
FreezeWatch(limit_s=float(sys.argv[1]), tick_s=0.05).start()
print("watching", flush=True)
while True:
    time.sleep(0.01)
"""


def run_child(limit_s: float, stopped_s: float) -> subprocess.Popen:
    command = [sys.executable, "-c", CHILD, str(limit_s)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"watching"
    child.send_signal(signal.SIGSTOP)
    time.sleep(stopped_s)
    child.send_signal(signal.SIGCONT)
    return child


def test_frozen_past_the_limit_exits_on_waking() -> None:
    child = run_child(limit_s=0.5, stopped_s=1.2)
    assert child.wait(timeout=5) == ExitCode.FROZEN
    assert child.stderr is not None
    line = child.stderr.read().decode().strip()
    assert line.startswith("worker_fenced reason=frozen") and len(line.splitlines()) == 1, line


def test_short_freeze_keeps_running() -> None:
    child = run_child(limit_s=2.0, stopped_s=0.3)
    try:
        time.sleep(0.5)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
