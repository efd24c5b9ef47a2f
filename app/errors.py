"""The exceptions UBSCore raises on purpose.

    UBSCoreError
     +-- ConfigurationError      a UBS_ setting is missing or malformed (worker refuses to start)
     +-- InvalidOperation        client input that cannot be an operation (names field + reason)
     +-- SettlementUnavailable   the CQL database did not acknowledge a write (sink retries)

Ledger rejections (``insufficient_funds`` and friends) are not exceptions: they are
ordinary results, returned as rejected events, because every operation gets one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class UBSCoreError(Exception):
    """Root of every error UBSCore raises deliberately."""


class ConfigurationError(UBSCoreError):
    """A setting from the environment is unusable."""


class InvalidOperation(UBSCoreError):
    """Input that fails validation; carries the offending field and a stable reason code."""

    def __init__(self, field: Optional[str], reason: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.message = message

    def as_dict(self) -> Dict[str, Any]:
        """The JSON body of a 4xx answer and the error attached to a dead letter."""
        return {"error": self.reason, "field": self.field, "message": self.message}


class SettlementUnavailable(UBSCoreError):
    """The database did not take a batch; the sink keeps the offsets and tries again."""
