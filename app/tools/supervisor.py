"""Keeping worker processes running: the one supervisor of ``ubscore workers`` and the fault-injection runner.

A supervisor looks at its children when asked (``poll``), so it fits a plain loop
and an asyncio task alike. It records every exit, and restarts a child whose
status ``restart`` accepts, ``restart_delay_s`` after the exit and only if the
child is neither held nor already started again by someone else. A held child is
not looked at at all: whoever holds it (a fault injector) stops and starts it; a
restart that came due meanwhile is made once it is released, if it is still down.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set


class Child(Protocol):
    """A process the supervisor can restart: ``start`` replaces ``process`` with a new one."""

    process: Optional[subprocess.Popen]

    def start(self) -> object:
        """Start (again)."""


@dataclass(frozen=True)
class Exit:
    """One child's exit: which child, its status (negative: the signal that killed it), and when."""

    index: int
    status: int
    at: float


@dataclass
class Supervisor:
    """Restarts children whose exit status ``restart`` accepts."""

    children: Sequence[Child]
    restart: Callable[[int], bool]
    restart_delay_s: float = 0.0
    on_restart: Callable[[int], None] = lambda index: None
    held: Set[int] = field(default_factory=set)
    exits: List[Exit] = field(default_factory=list)
    restarts: int = 0
    _due: Dict[int, Exit] = field(default_factory=dict)
    _seen: Dict[int, subprocess.Popen] = field(default_factory=dict)

    def poll(self, now: Optional[float] = None) -> List[Exit]:
        """Look at every child once: record and return the new exits, make the restarts that are due."""
        now = time.monotonic() if now is None else now
        new: List[Exit] = []
        for index, child in enumerate(self.children):
            process = child.process
            if index in self.held or process is None or process.poll() is None or self._seen.get(index) is process:
                continue
            self._seen[index] = process
            exit_ = Exit(index, process.returncode, now)
            self.exits.append(exit_)
            new.append(exit_)
            if self.restart(exit_.status):
                self._due[index] = exit_
        for index, exit_ in list(self._due.items()):
            if now - exit_.at < self.restart_delay_s or index in self.held:
                continue  # a held child's restart stays due: its holder may leave it dead
            del self._due[index]
            child = self.children[index]
            if child.process is self._seen.get(index):
                child.start()
                self.restarts += 1
                self.on_restart(index)
        return new
