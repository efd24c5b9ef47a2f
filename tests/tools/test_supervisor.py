"""The supervisor of ``ubscore workers`` and of the chaos runner, with fake children instead of workers.

Each child is a tiny Python process whose exit status is chosen by the test, so
what is checked is exactly the rule of app/tools/supervisor.py and
app/tools/launcher.py: statuses 70 and 75 (app.exit_codes) ask for a restart, any
other exit stops everything, a held child is left alone, a restart waits
``restart_delay_s`` and never doubles one someone else already made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

from app.exit_codes import RESTART_REASONS, ExitCode
from app.tools import launcher
from app.tools.launcher import LocalWorker, supervise
from app.tools.supervisor import Supervisor

RESTARTABLE = sorted(int(code) for code in RESTART_REASONS)


def exits_with(status: int) -> List[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({status})"]


def exits_first_then_sleeps(status: int, marker: Path, restarted: Path) -> List[str]:
    """Exits ``status`` on its first run (leaving ``marker``); later runs leave ``restarted`` and sleep."""
    code = (
        "import pathlib, sys, time\n"
        f"marker, restarted = pathlib.Path({str(marker)!r}), pathlib.Path({str(restarted)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        f"    sys.exit({status})\n"
        "restarted.touch()\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def sleeps_until_then_exits(path: Path, status: int) -> List[str]:
    """Waits (up to 10 s) for ``path`` to appear, then exits ``status``: orders its exit after another child's."""
    code = (
        "import pathlib, sys, time\n"
        "deadline = time.monotonic() + 10\n"
        f"while not pathlib.Path({str(path)!r}).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"sys.exit({status})\n"
    )
    return [sys.executable, "-c", code]


def exits_zero_on_sigterm(ready: Path) -> List[str]:
    """Sleeps; SIGTERM makes it exit 0, as a worker's clean stop does. ``ready`` appears once that holds."""
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def sleeper() -> List[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)"]


def wait_exited(worker: LocalWorker, timeout: float = 5.0) -> int:
    assert worker.process is not None
    return worker.process.wait(timeout=timeout)


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def restart_on_request(status: int) -> bool:
    return status in RESTART_REASONS


class WorkerPool:
    """Every process the LocalWorkers of a test start (restarts included), killed at the end."""

    def __init__(self) -> None:
        self.processes: List[subprocess.Popen] = []

    def start(self, command: List[str]) -> "Tracked":
        return Tracked(command, self).start()

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class Tracked(LocalWorker):
    """A LocalWorker that hands each process it starts to its pool."""

    def __init__(self, command: List[str], pool: WorkerPool) -> None:
        super().__init__(command, env=dict(os.environ))
        self.pool = pool

    def start(self) -> "Tracked":
        super().start()
        assert self.process is not None
        self.pool.processes.append(self.process)
        return self


@pytest.fixture()
def workers() -> Iterator[WorkerPool]:
    pool = WorkerPool()
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.mark.parametrize("status", RESTARTABLE)
def test_a_child_asking_for_a_restart_is_started_again(status: int, workers: WorkerPool) -> None:
    child = workers.start(exits_with(status))
    first = child.process
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request)
    (exit_,) = supervisor.poll(now=100.0)
    assert (exit_.index, exit_.status, exit_.at) == (0, status, 100.0)
    assert supervisor.restarts == 1 and child.process is not first


@pytest.mark.parametrize("status", [1, ExitCode.BAD_CONFIGURATION])
def test_a_child_exiting_otherwise_is_recorded_and_not_restarted(status: int, workers: WorkerPool) -> None:
    """A worker refusing its configuration (78) would refuse it again: it is not restarted either."""
    child = workers.start(exits_with(status))
    first = child.process
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request)
    assert [e.status for e in supervisor.poll(now=1.0)] == [status]
    assert supervisor.poll(now=2.0) == []  # one exit is reported once
    assert supervisor.restarts == 0 and child.process is first


def test_a_held_child_is_neither_looked_at_nor_restarted(workers: WorkerPool) -> None:
    child = workers.start(exits_with(ExitCode.FROZEN))
    first = child.process
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request, held={0})
    assert supervisor.poll(now=1.0) == []
    assert (supervisor.exits, supervisor.restarts, child.process) == ([], 0, first)


def test_a_child_held_while_its_restart_is_due_is_not_restarted(workers: WorkerPool) -> None:
    child = workers.start(exits_with(ExitCode.STALLED))
    first = child.process
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request, restart_delay_s=5.0)
    assert len(supervisor.poll(now=10.0)) == 1
    supervisor.held.add(0)  # a fault injector takes it over
    supervisor.poll(now=20.0)
    assert supervisor.restarts == 0 and child.process is first
    supervisor.held.discard(0)  # and lets it go, still down: the restart due is made now
    supervisor.poll(now=21.0)
    assert supervisor.restarts == 1 and child.process is not first


def test_a_child_its_holder_started_again_is_not_restarted_a_second_time(workers: WorkerPool) -> None:
    child = workers.start(exits_with(ExitCode.STALLED))
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request, restart_delay_s=5.0)
    assert len(supervisor.poll(now=10.0)) == 1
    supervisor.held.add(0)
    child.start()  # the holder restarts it itself
    second = child.process
    supervisor.held.discard(0)
    supervisor.poll(now=20.0)
    assert supervisor.restarts == 0 and child.process is second


def test_a_restart_waits_for_the_delay(workers: WorkerPool) -> None:
    child = workers.start(exits_with(ExitCode.STALLED))
    first = child.process
    wait_exited(child)
    restarted: List[int] = []
    supervisor = Supervisor([child], restart=restart_on_request, restart_delay_s=5.0, on_restart=restarted.append)
    supervisor.poll(now=100.0)
    supervisor.poll(now=104.9)
    assert (supervisor.restarts, restarted, child.process) == (0, [], first)
    supervisor.poll(now=105.0)
    assert (supervisor.restarts, restarted) == (1, [0]) and child.process is not first


def test_a_child_restarted_by_someone_else_is_not_started_twice(workers: WorkerPool) -> None:
    child = workers.start(exits_with(ExitCode.FROZEN))
    wait_exited(child)
    supervisor = Supervisor([child], restart=restart_on_request, restart_delay_s=5.0)
    supervisor.poll(now=0.0)
    child.command = sleeper()
    child.start()  # someone else (a fault injector) started it again meanwhile
    theirs = child.process
    supervisor.poll(now=10.0)
    assert supervisor.restarts == 0 and child.process is theirs
    assert theirs is not None and theirs.poll() is None


@pytest.fixture()
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "POLL_S", 0.02)


def run_supervise(workers: Sequence[LocalWorker], stopping: threading.Event, timeout: float = 15.0) -> int:
    """supervise() in a thread, so a test that would hang fails instead."""
    result: List[int] = []
    thread = threading.Thread(target=lambda: result.append(supervise(workers, stopping)), daemon=True)
    thread.start()
    thread.join(timeout)
    stopping.set()
    assert result, "supervise() did not return"
    return result[0]


@pytest.mark.parametrize("status", RESTARTABLE)
def test_launcher_restarts_on_request_then_stops_everyone_when_one_fails(
    status: int, tmp_path: Path, workers: WorkerPool, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    restarted = tmp_path / "restarted"
    flaky = workers.start(exits_first_then_sleeps(status, tmp_path / "exited-once", restarted))
    steady = workers.start(sleeper())
    failing = workers.start(sleeps_until_then_exits(restarted, 1))
    first_flaky = flaky.process

    returned = run_supervise([flaky, steady, failing], threading.Event())

    assert returned == 1
    assert restarted.exists() and flaky.process is not first_flaky  # the flaky one was started again
    for worker in (flaky, steady, failing):
        assert worker.process is not None and worker.process.poll() is not None  # all stopped
    out = capsys.readouterr().out
    assert f"worker 0: exited {status}, restarting ({RESTART_REASONS[ExitCode(status)]})" in out
    assert "worker 2: exited 1, stopping all workers" in out


def test_launcher_stops_everyone_on_request_with_their_status(
    tmp_path: Path, workers: WorkerPool, fast_polls: None
) -> None:
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    children = [workers.start(exits_zero_on_sigterm(path)) for path in ready]
    for path in ready:
        wait_for(path)
    stopping = threading.Event()
    stopping.set()
    assert run_supervise(children, stopping) == 0
    assert [c.process.returncode for c in children if c.process is not None] == [0, 0]
