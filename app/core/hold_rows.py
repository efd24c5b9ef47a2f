"""Each open hold is a row of its own (the ``holds`` table), beside its account's row: the rules, no I/O.

A market maker keeps tens of thousands of orders open. Kept inside the account
row, every hold was re-read and re-written by each of that user's operations,
and past about 16,000 the row no longer fitted in one Kafka record: the
checkpoint failed, and every partition of the worker with it. So an account row
keeps only the totals its decisions need (``Account.held_total``), and a
message's decision loads the holds it names (``load``): a lock, unlock or
transfer its ``hold_id``, a trade's step its side's hold, an expiry its hold.

The rule that keeps rows and accounts consistent across a crash is the one of
result rows. A row records the input that wrote it (``source``) and the hold it
replaced (``before``), and the checkpoint makes hold rows durable one step
before the accounts (app.agents.checkpoint). So a row is never behind its
account; after a crash it may be ahead, and a row whose ``source`` the account
has not applied reads as ``before`` (``HoldRow.seen_by``): the message is
applied again from what its account knows, like any half-applied message. (So
an account records the offset of a message only with what it changed: a
message applied at or below its account's offset, ``Decision.APPLY_LATE``,
stamps rows that the old account counts as applied too.) A
hold that closes leaves a row without a hold (with ``before``) until its
account is durable; the checkpoint then deletes it (a tombstone), and one a
crash left behind reads as no hold and is deleted when a message names it.

An account row written before holds had rows of their own carries all of its
holds, and no rows exist for them: its holds are read from it, and the first
write of the account puts each of them in a row and drops them from the account
row (``HoldsLoaded.rows_after``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from app.core.ledger import Account, Hold, Origin


def hold_row_key(user_id: int, hold_id: str) -> bytes:
    """The ``holds`` key of one hold: the user's rows share a prefix and sort by hold id."""
    return f"{user_id}|{hold_id}".encode()


def hold_rows_prefix(user_id: int) -> bytes:
    """What every ``holds`` key of a user starts with (the digits of another user never continue with ``|``)."""
    return f"{user_id}|".encode()


@dataclass(frozen=True)
class HoldRow:
    """One row of the ``holds`` table: the hold (None once closed), the input that wrote it, what it replaced."""

    hold: Optional[Hold]
    source: Origin
    before: Optional[Hold] = None

    def seen_by(self, account: Account) -> Optional[Hold]:
        """The hold as ``account`` knows it: the row's own once the account applied its source, else ``before``."""
        return self.hold if account.has_applied(self.source) else self.before

    def to_json(self) -> Dict[str, Any]:
        """Table form: the hold's fields (none for a closed hold), ``source``, and ``before`` when there was one."""
        body: Dict[str, Any] = {} if self.hold is None else self.hold.to_json()
        body["source"] = self.source.to_json()
        if self.before is not None:
            body["before"] = self.before.to_json()
        return body

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> Optional["HoldRow"]:
        """Inverse of to_json; None when there is no row."""
        if not body:
            return None
        before = body.get("before")
        return cls(
            hold=Hold.from_json(body) if "asset" in body else None,
            source=Origin.from_json(body["source"]),
            before=None if before is None else Hold.from_json(before),
        )


def closed_hold(body: Optional[Mapping[str, Any]]) -> bool:
    """Whether a ``holds`` row is that of a closed hold, kept (for ``before``) until its account is durable."""
    row = HoldRow.from_json(body)
    return row is not None and row.hold is None


@dataclass(frozen=True)
class HoldsLoaded:
    """An account as a decision starts from it, with the hold rows read for it, to write back what changes."""

    #: The account, carrying the holds the message names that are open (or all, for a row that carried them).
    account: Account
    #: The rows read, by hold id (None: no row).
    rows: Mapping[str, Optional[HoldRow]] = field(default_factory=dict)
    #: The account row carried its holds (written before holds had rows of their own).
    carried: bool = False
    #: Hold ids whose row the batch being filled wrote already: their ``before`` is the batch's own.
    fresh: FrozenSet[str] = frozenset()

    def rows_after(self, account: Account, origin: Origin) -> List[Tuple[str, Optional[HoldRow]]]:
        """The hold rows to write with ``account``, the decision's (None deletes a row).

        Each hold the decision opened, changed or closed, each row that reads
        otherwise than it says (ahead of the account, or a closed hold a crash
        left), and, for an account row that carried its holds, every hold. A row
        keeps as ``before`` what the account row still durable knows: the value
        loaded, or for a row this batch wrote already, that row's ``before``.
        """
        known = self.account
        written: List[Tuple[str, Optional[HoldRow]]] = []
        for hold_id in sorted(set(self.rows) | set(known.holds) | set(account.holds)):
            row = self.rows.get(hold_id)
            new = account.holds.get(hold_id)
            if row is not None and not self.carried and known.has_applied(row.source):
                if row.hold == new and (new is not None or hold_id in self.fresh):
                    continue  # it says so already (a closed hold of this batch is deleted at its checkpoint)
            if row is not None and hold_id in self.fresh:
                before = row.before
            else:
                before = None if self.carried else known.holds.get(hold_id)
            if new is None and before is None:
                if row is not None:
                    written.append((hold_id, None))  # nothing to keep: delete it
                continue
            written.append((hold_id, HoldRow(new, origin, before)))
        return written


def load(
    account_row: Optional[Mapping[str, Any]],
    hold_ids: Iterable[str],
    read_row: Callable[[str], Optional[Mapping[str, Any]]],
    fresh: Callable[[str], bool],
) -> HoldsLoaded:
    """The account of ``account_row`` with the named holds, read with ``read_row`` (a hold id's row or None).

    ``fresh`` says whether the batch being filled wrote a hold's row already.
    """
    account = Account.from_json(account_row)
    carried = account_row is not None and "holds" in account_row
    ids = sorted(set(hold_ids))
    rows = {hold_id: HoldRow.from_json(read_row(hold_id)) for hold_id in ids}
    if not carried:
        seen = {hold_id: row.seen_by(account) for hold_id, row in rows.items() if row is not None}
        account = replace(account, holds={hold_id: hold for hold_id, hold in seen.items() if hold is not None})
    return HoldsLoaded(account, rows, carried, frozenset(hold_id for hold_id in ids if fresh(hold_id)))
