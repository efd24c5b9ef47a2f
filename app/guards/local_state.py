"""Local table files are a cache of the changelog, reopened only after a clean shutdown.

Faust writes a table change to RocksDB at once and to its changelog topic later,
through the producer. A worker killed (or frozen and fenced) in between leaves
local files holding writes that Kafka never received. Reopening them is unsafe:
the next write of an account publishes that account whole, so balances from an
operation whose result row and event never left the dead process reach the
changelog without them. Another worker rebuilding from it then finds the
operation's offset recorded in the account but no result to answer its
redelivery with, and applies it a second time (docs/fault-injection.md, finding 6).

So a worker keeps its local tables only when the process before it left them
cleanly: it stopped, flushed the producer and saw no send fail, and then wrote
a marker file. Any other start (after SIGKILL, a crash, a fenced freeze, a
failed send) discards them and rebuilds from the changelogs, which always hold
a prefix of what the ledger wrote (result row, then account, then event, in
one FIFO buffer). A start removes the marker before any store opens, so a crash
later in that life leaves none.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from faust.sensors import Sensor

log = logging.getLogger(__name__)

#: Written into the table directory by a clean shutdown, removed by every start.
CLEAN_MARKER = "clean-shutdown"


class Deliveries(Sensor):
    """Counts messages handed to the producer and their outcomes, for the clean-shutdown check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initiated = 0
        self.completed = 0
        self.failed = 0

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        """A message left Faust's buffer for aiokafka."""
        self.initiated += 1
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """The broker acknowledged a message."""
        self.completed += 1

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        """A message could not be produced; Faust logs it and goes on."""
        self.failed += 1

    @property
    def all_acknowledged(self) -> bool:
        """True when every message sent so far was acknowledged and none failed."""
        return self.failed == 0 and self.completed == self.initiated


def open_local_tables(tabledir: Path) -> bool:
    """Keep the stores if the last process marked them clean, else discard them. True if kept."""
    marker = tabledir / CLEAN_MARKER
    if marker.is_file():
        marker.unlink()
        _sync_directory(tabledir)
        log.info("local_tables_kept path=%s reason=clean_shutdown", tabledir)
        return True
    discard_local_tables(tabledir)
    return False


def mark_clean_shutdown(tabledir: Path) -> None:
    """Record that every local table write of this process reached Kafka."""
    if not tabledir.is_dir():
        return
    marker = tabledir / CLEAN_MARKER
    with open(marker, "w") as handle:
        handle.write("written after the producer flushed with no failed send\n")
        handle.flush()
        os.fsync(handle.fileno())
    _sync_directory(tabledir)
    log.info("local_tables_marked_clean path=%s", tabledir)


def discard_local_tables(tabledir: Path) -> int:
    """Delete every store under ``tabledir``; return how many entries were removed."""
    if not tabledir.is_dir():
        return 0
    removed = 0
    for entry in sorted(tabledir.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    log.info("local_tables_discarded path=%s entries=%s reason=no_clean_shutdown", tabledir, removed)
    return removed


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
