"""``ubscore workers N [LEVEL] [--roles ledger,sink]``: run N workers here, each with its own port and data.

Worker i (0-based) serves on UBS_WEB_PORT + i and keeps its RocksDB files in
UBS_DATA_DIR/worker-i; everything else (broker, keyspace, partitions) is shared,
so Kafka spreads the partitions across them and each one routes reads to the
owner. Ctrl-C (SIGINT) or SIGTERM stops them all cleanly. A worker that exits
asking to be started again (app.exit_codes: its input or a table recovery
stalled, a checkpoint failed, or it fenced itself after a freeze or past its
ownership bound) is restarted; any other exit stops them all. On several
machines, start one ``ubscore worker`` per machine with UBS_ADVERTISED_HOST set
instead, under a supervisor that restarts it on those statuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from app.exit_codes import RESTART_REASONS
from app.settings import ROLES, Settings, load
from app.tools.supervisor import Supervisor

POLL_S = 0.5
STOP_TIMEOUT_S = 60.0


class LocalWorker:
    """One ``python -m app worker`` process, restartable with the same environment."""

    def __init__(self, command: Sequence[str], env: Dict[str, str]) -> None:
        self.command = list(command)
        self.env = env
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "LocalWorker":
        """Start (again)."""
        self.process = subprocess.Popen(self.command, env=self.env)
        return self


def worker_envs(settings: Settings, count: int, roles: Sequence[str] = ()) -> List[Dict[str, str]]:
    """The environment of each of ``count`` workers: its own port and data directory, and its role.

    ``roles`` are given to the workers in turn (``ledger,sink``: even workers run
    the ledger, odd ones the sink); without them every worker has ``UBS_ROLE``.
    """
    envs = []
    for index in range(count):
        env = dict(os.environ)
        env["UBS_WEB_PORT"] = str(settings.web_port + index)
        env["UBS_DATA_DIR"] = str(Path(settings.data_dir) / f"worker-{index}")
        if roles:
            env["UBS_ROLE"] = roles[index % len(roles)]
        envs.append(env)
    return envs


def supervise(workers: Sequence[LocalWorker], stopping: threading.Event) -> int:
    """Restart the workers that ask for it until one exits otherwise or ``stopping`` is set; then stop all."""
    supervisor = Supervisor(workers, restart=lambda status: status in RESTART_REASONS)
    while not stopping.is_set():
        exits = supervisor.poll()
        for exit_ in exits:
            why = RESTART_REASONS.get(exit_.status)  # type: ignore[call-overload]
            action = f"restarting ({why})" if why else "stopping all workers"
            print(f"worker {exit_.index}: exited {exit_.status}, {action}", flush=True)
        if any(exit_.status not in RESTART_REASONS for exit_ in exits):
            break
        time.sleep(POLL_S)
    return stop_all(workers)


def stop_all(workers: Sequence[LocalWorker]) -> int:
    """SIGTERM every running worker, SIGKILL what is left after a minute; the highest exit status."""
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        assert worker.process is not None
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    return max((w.process.returncode or 0) for w in workers if w.process is not None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Start the workers, keep them running, stop them all on a signal or an unexpected exit."""
    args = list(argv or [])
    roles: List[str] = []
    if "--roles" in args:
        at = args.index("--roles")
        roles = [role for role in (args[at + 1] if at + 1 < len(args) else "").split(",") if role]
        del args[at : at + 2]
        unknown = sorted(set(roles) - set(ROLES))
        if not roles or unknown:
            print(
                f"ubscore workers: --roles takes a list of {', '.join(ROLES)}, got {unknown or 'none'}", file=sys.stderr
            )
            return 2
    if args and not args[0].isdigit():
        print(f"ubscore workers: the count must be a whole number, got {args[0]!r}", file=sys.stderr)
        return 2
    count = int(args[0]) if args else 1
    loglevel = args[1] if len(args) > 1 else "info"
    settings = load()
    command = [sys.executable, "-m", "app", "worker", "-l", loglevel]
    workers = []
    for index, env in enumerate(worker_envs(settings, count, roles)):
        url = replace(settings, web_port=int(env["UBS_WEB_PORT"])).canonical_url
        role = env.get("UBS_ROLE", settings.role)
        print(f"worker {index}: {role}  {url}  data {env['UBS_DATA_DIR']}", flush=True)
        workers.append(LocalWorker(command, env).start())
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return supervise(workers, stopping)
