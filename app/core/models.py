"""One import path for what travels on the topics: client commands, trade terms and result events.

The definitions live by what they hold (app.core.field_checks, app.core.trade_terms,
app.core.commands, app.core.events); the agent, the gateway, the sink, the tools and the
tests import them from here, so this module re-exports their public names and defines none.
"""

from app.core.commands import (
    KINDS,
    SOURCES,
    Command,
    Intake,
    Operation,
    identify,
    parse_operation,
    read_operation,
    users_named,
)
from app.core.events import EVENT_KINDS, Change, Event, read_event
from app.core.field_checks import MAX_AMOUNT, MAX_ASSET, MAX_ID, MAX_OP_ID_CHARS, MAX_TS, check_hold_id, check_op_id
from app.core.trade_terms import ROLES, Party, Trade, parse_trade

__all__ = [
    "EVENT_KINDS",
    "KINDS",
    "MAX_AMOUNT",
    "MAX_ASSET",
    "MAX_ID",
    "MAX_OP_ID_CHARS",
    "MAX_TS",
    "ROLES",
    "SOURCES",
    "Change",
    "Command",
    "Event",
    "Intake",
    "Operation",
    "Party",
    "Trade",
    "check_hold_id",
    "check_op_id",
    "identify",
    "parse_operation",
    "parse_trade",
    "read_event",
    "read_operation",
    "users_named",
]
