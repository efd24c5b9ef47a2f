"""The one backoff of UBSCore's retry loops: start short, double, never exceed a ceiling."""

from __future__ import annotations

from typing import Iterator


def backoff(first_s: float, limit_s: float) -> Iterator[float]:
    """Delays for consecutive retries: ``first_s``, twice that, ... up to ``limit_s`` for ever.

    Short first waits answer a blip quickly; the ceiling keeps a returning
    dependency (broker, database, a result being written) noticed within it.
    """
    delay = first_s
    while True:
        yield min(delay, limit_s)
        delay = min(delay * 2, limit_s)
