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

#: Every reason a message of balance.operations or balance.credits can be dead-lettered with: the readers'
#: (app.core.wire, app.core.field_checks, app.core.trade_terms, app.core.commands, app.core.legs) and the agent's
#: own (a record's timestamp out of range, an error nobody foresaw). Known in advance so that a worker exports each
#: reason's dead-letter count at 0 from its start (app.observability.metrics.export_known_series), and an alert
#: sees a reason's first letter as an increase.
#: tests/unit/test_monitoring.py reads the readers' code for reasons missing here.
DEAD_LETTER_REASONS = (
    "accounts_must_be_different",
    "body_too_large",
    "buyer_is_not_user",
    "duplicate_field",
    "fee_exceeds_amount",
    "invalid_amount",
    "invalid_asset",
    "invalid_body",
    "invalid_buyer",
    "invalid_credit",
    "invalid_expires_at_ms",
    "invalid_fee",
    "invalid_fee_account",
    "invalid_hold_id",
    "invalid_json",
    "invalid_leg",
    "invalid_op_id",
    "invalid_release_rest",
    "invalid_seller",
    "invalid_source",
    "invalid_timestamp",
    "invalid_to_user_id",
    "invalid_user_id",
    "missing_field",
    "processing_failed",
    "same_asset",
    "self_trade",
    "unknown_field",
    "unknown_kind",
)


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
