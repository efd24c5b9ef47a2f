"""``ubscore workers N``: run N workers on this machine, each with its own port and data directory.

Worker i (0-based) serves on UBS_WEB_PORT + i and keeps its RocksDB files in
UBS_DATA_DIR/worker-i; everything else (broker, keyspace, partitions) is shared,
so Kafka spreads the partitions across them and each one routes reads to the
owner. Ctrl-C (SIGINT) or SIGTERM stops them all cleanly. A worker that fenced
itself after a freeze (exit 75) or whose input stalled (exit 70) is restarted;
any other exit stops them all. On several machines, start one ``ubscore worker``
per machine with UBS_ADVERTISED_HOST set instead, under a supervisor that
restarts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from app.fencing import EXIT_FROZEN
from app.settings import load
from app.stalls import EXIT_STALLED

#: Exit statuses after which a worker is started again, and why it exited.
RESTART_ON = {EXIT_FROZEN: "fenced itself after a freeze", EXIT_STALLED: "its input stalled"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Start the workers, wait, and stop them all when one exits or a signal arrives."""
    args = list(argv or [])
    count = int(args[0]) if args else 1
    loglevel = args[1] if len(args) > 1 else "info"
    settings = load()
    processes: List[subprocess.Popen] = []
    envs: List[Dict[str, str]] = []
    for index in range(count):
        env = dict(os.environ)
        env["UBS_WEB_PORT"] = str(settings.web_port + index)
        env["UBS_DATA_DIR"] = str(Path(settings.data_dir) / f"worker-{index}")
        url = f"http://{settings.advertised_host}:{settings.web_port + index}"
        print(f"worker {index}: {url}  data {env['UBS_DATA_DIR']}", flush=True)
        envs.append(env)
        processes.append(subprocess.Popen([sys.executable, "-m", "app", "worker", "-l", loglevel], env=env))

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for index, process in enumerate(processes):
            status = process.poll()
            if status in RESTART_ON:
                # A fresh start is the remedy for both (app/fencing.py, app/input_watch.py).
                print(f"worker {index}: exited {status} ({RESTART_ON[status]}), restarting", flush=True)
                processes[index] = subprocess.Popen(process.args, env=envs[index])
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return max((p.returncode or 0) for p in processes)
