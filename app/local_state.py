"""Local table files are a cache of the changelog, trusted only within one process's life.

Faust writes a table change to RocksDB at once and to its changelog topic later,
through the producer. A worker killed (or frozen and fenced) in between leaves
local files holding writes that Kafka never received. Reopening them is unsafe:
the next write of an account publishes that account whole, so balances from an
operation whose result row and event never left the dead process reach the
changelog without them. Another worker rebuilding from it then finds the
operation's offset recorded in the account but no result to answer its
redelivery with, and applies it a second time. The fault-injection suite showed
exactly this (tests/integration/CHAOS.md, finding 6).

So a worker discards its local tables when it starts and rebuilds them from the
changelogs, which always hold a prefix of what the ledger wrote (result row,
then account, then event, in one FIFO buffer). The cost is a full read of the
compacted changelogs at every start, not only after a crash.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


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
    log.info("local_tables_discarded path=%s entries=%s reason=rebuild_from_changelog", tabledir, removed)
    return removed
