"""Where a machine's CPU time goes during a measurement, from /proc: steadier than rates on a shared machine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """CPU time one process has used, all its threads (user + system); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_seconds() -> tuple[float, float]:
    """Busy and total CPU time of the machine, all cores, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


def stack_pids() -> Dict[str, int]:
    """The local stack's JVMs by name (kafka, cassandra), found by their command lines."""
    found: Dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"java" not in command.split(b" ", 1)[0]:
            continue
        for name in ("kafka", "cassandra"):
            if name.encode() in command and name not in found:
                found[name] = int(entry.name)
    return found


@dataclass
class CpuWindow:
    """CPU used between ``start()`` and ``shares()``: by named processes and by the whole machine, in cores."""

    pids: Dict[str, int]

    def start(self) -> "CpuWindow":
        self._wall = time.monotonic()
        self._machine = machine_seconds()
        self._used = {name: process_seconds(pid) for name, pid in self.pids.items()}
        return self

    def shares(self) -> Dict[str, float]:
        """Cores each process kept busy on average; ``machine`` is busy cores, ``cores`` how many there are."""
        wall = time.monotonic() - self._wall
        busy, total = machine_seconds()
        figures = {name: (process_seconds(pid) - self._used[name]) / wall for name, pid in self.pids.items()}
        figures["machine"] = (busy - self._machine[0]) / wall
        figures["cores"] = (total - self._machine[1]) / wall
        return figures
