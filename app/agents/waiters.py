"""Requests waiting on this worker for an operation's result, woken when a checkpoint writes it.

A ``?wait=true`` request whose user lives here watches the result's key and is
woken by the checkpoint once the batch's rows, the result's and its account's,
are in RocksDB, instead of polling the table: an answered client then reads its
own balance. A wake-up only says "look again": the request reads the
table itself, so a spurious or missed wake-up costs a read, never a wrong answer.
An account read with ``?min_seq=`` waits the same way on the account's key.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Set


class Waiters:
    """Result keys that requests on this worker are waiting for, each with the events to set."""

    def __init__(self) -> None:
        self._waiting: Dict[bytes, Set[asyncio.Event]] = {}

    @contextmanager
    def watching(self, key: bytes) -> Iterator[asyncio.Event]:
        """An event set when a checkpoint writes ``key``, for the duration of the block."""
        woken = asyncio.Event()
        self._waiting.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            group = self._waiting.get(key)
            if group is not None:
                group.discard(woken)
                if not group:
                    del self._waiting[key]

    def wake(self, keys: Iterable[bytes]) -> None:
        """Results under ``keys`` were just written."""
        if not self._waiting:
            return
        for key in keys:
            for woken in self._waiting.get(key, ()):
                woken.set()

    def __len__(self) -> int:
        return sum(len(group) for group in self._waiting.values())


#: Result keys, woken once a checkpoint's results and accounts are written (``?wait=true``, ``?wait_s=``).
waiters = Waiters()
#: Account keys, woken at the same moment (``?min_seq=`` on account reads).
account_waiters = Waiters()
