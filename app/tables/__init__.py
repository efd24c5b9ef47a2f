"""The ledger's state: five RocksDB tables (rocksdict) backed by changelog topics.

``accounts``: user id -> {"seq": n, "balances": {asset: {"available", "locked"}},
              "held": {asset: what its open holds lock}, ...}: a row whose size grows
              with the user's assets (UBS_MAX_ASSETS_PER_ACCOUNT), never with its holds.
``holds``:    "<user id>|<hold id>" -> one open hold, the input that wrote it and the
              hold it replaced (app.core.hold_rows); a user's holds are one key range.
``results``:  result key (see ledger.operation_key / credit_key) -> the first event.
``cursors``:  "<input topic>:<partition>" -> the highest input offset applied there,
              so a record Faust skipped shows as a hole even across restarts
              and rebalances (app.guards.input_gaps).
``expiries``: "<expires_at_ms, 15 digits>|<user id>|<hold id>" -> the expiry leg that
              releases the hold; keys sort by time, so the expiry timer
              (app.agents.expiry) reads what is due from the front.

``assets``:   asset id -> {"asset", "code", "scale"}: the registry, a global table
              (every worker holds all of it) kept in memory and read at start
              from its changelog, the compacted topic ``balance.assets``.

The first five are written only by the ubscore agent, on the partition of the input
record being handled, which is the partition of the user an entry belongs to.
They share one declaration (``_table``) so they stay co-partitioned with the
input topics and keyed the same way.

Retention of ``results`` has two clocks. The ledger decides whether a row is
still alive from the row's own time, at ``UBS_RESULTS_RETENTION_S`` (default 7
days): the same answer on every worker and after every rebuild. A retry with the
same op_id inside that window is applied at most once; one after it is a new
operation. Physical removal comes no earlier than twice that window
(``app.topics.KEPT_S``): RocksDB's TTL, which counts from the local write and so
restarts on a rebuild, and the changelog's ``compact,delete`` retention, which
counts from the broker's append. So it never removes a row the ledger still
treats as alive, and a worker rebuilding from Kafka finds every such row. No
changelog is ever cut by size (``retention.bytes=-1``); the other changelogs are
compacted only. app.faust_app checks all of it at start (app.frame.kafka_admin).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, Optional, Tuple

from faust.stores.memory import Store as MemoryStore
from faust.tables.globaltable import GlobalTable
from faust.types import StoreT, TableT

from app.core.hold_rows import HoldRow, hold_rows_prefix, load
from app.core.ledger import Account, Hold
from app.core.legs import Expiry
from app.faust_app import app
from app.frame.faust_internals import open_partition_db
from app.frame.kafka_admin import CLEANUP_POLICY, RETENTION_BYTES, RETENTION_MS
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.topics import ASSETS, KEPT_MS, KEPT_S


def _table(name: str, help: str, options: Optional[Dict[str, Any]] = None, **kwargs: Any) -> TableT:
    """A ledger table: one partition per input partition, raw byte keys, stored in RocksDB."""
    return app.Table(
        name,
        partitions=settings.partitions,
        key_type=bytes,  # keys are UTF-8 bytes, stored as they are ("raw")
        options={"driver": "rocksdict", **(options or {})},
        help=help,
        **kwargs,
    )


def read(table: TableT, partition: int, key: bytes) -> Any:
    """One row of a table, read from the partition it lives on; None when absent.

    A Faust table read looks the key up in every partition's database unless
    the task's current event names one, and makes two lookups (contains, then
    get): a hot path reads the one database that can hold the row, once. The
    values are the JSON Faust's "json" serializer writes. A partition not open
    here is read through Faust's own path.
    """
    db = open_partition_db(table, partition)
    if db is None:
        return table.get(key)
    raw = db.get(key)
    return None if raw is None else json.loads(raw)


def scan(table: TableT, partition: int, prefix: bytes, start: bytes) -> Iterator[Tuple[bytes, Any]]:
    """The rows of one partition whose keys start with ``prefix``, from the first key at or after ``start``, in order.

    RocksDB seeks to ``start`` and reads on, so a page costs what it returns. The
    agent tests' memory store keeps every partition in one mapping, sorted here.
    Nothing is read of a partition whose database is not open here.
    """
    db = open_partition_db(table, partition)
    if db is not None:
        for key, raw in db.items(from_key=start):
            if not key.startswith(prefix):
                return
            yield key, json.loads(raw)
    elif isinstance(table.data, MemoryStore):
        for key in sorted(key for key in table.data.keys() if key.startswith(prefix) and key >= start):
            yield key, table.data[key]


accounts = _table("accounts", help="Balances and last seq of every user.")

holds = _table("holds", help="Open holds, one row each, by user and hold id.")

results = _table(
    "results",
    help="First result of every recent operation and credit leg, for idempotency.",
    options={"ttl": KEPT_S},
    extra_topic_configs={CLEANUP_POLICY: "compact,delete", RETENTION_MS: str(KEPT_MS), RETENTION_BYTES: "-1"},
)

cursors = _table("cursors", help="Highest input offset applied, per input topic partition.")

expiries = _table("expiries", help="Open holds that expire, by expiry time.")


def open_holds(user_id: int, after: Optional[str] = None) -> Tuple[Optional[Any], Iterator[Tuple[str, Hold]]]:
    """A user's account row and open holds, in hold id order after ``after``, from the owning partition here.

    Each hold as the account row knows it (app.core.hold_rows: a row ahead of its
    account reads as what it replaced, a closed one as none); a row written
    before holds had rows of their own carries them. The holds are read lazily,
    so a page costs what it takes.
    """
    key = user_key(user_id)
    partition = partition_for(key, settings.partitions)
    row = read(accounts, partition, key)
    loaded = load(row, (), lambda hold_id: None, lambda hold_id: False)
    if loaded.carried:
        carried = sorted(loaded.account.holds.items())
        return row, iter([(hold_id, hold) for hold_id, hold in carried if after is None or hold_id > after])
    return row, _seen(loaded.account, partition, hold_rows_prefix(user_id), after)


def _seen(account: Account, partition: int, prefix: bytes, after: Optional[str]) -> Iterator[Tuple[str, Hold]]:
    start = prefix if after is None else prefix + after.encode() + b"\x00"  # the first key past ``after``
    for key, value in scan(holds, partition, prefix, start):
        row = HoldRow.from_json(value)
        hold = None if row is None else row.seen_by(account)
        if hold is not None:
            yield key[len(prefix) :].decode(), hold


def expiry_row(expiry: Expiry) -> bytes:
    """The expiries-table key of a hold's expiry: fixed-width time first, so the table is a queue."""
    return f"{expiry.expires_at_ms:015d}|{expiry.user_id}|{expiry.hold_id}".encode()


class _Registry(GlobalTable):
    """A global table whose changelog is named for what it holds (``balance.assets``), not for the app.

    Faust's assignor finds a global table's changelog by this method, not by the
    ``changelog_topic`` a table may be given, so the name is set here.
    """

    def _changelog_topic_name(self) -> str:
        return ASSETS

    def _new_store(self) -> StoreT:
        # Read whole from its topic at every start. (Given as ``store="memory://"``, the URL is
        # falsy to Faust, which then falls back to the app's RocksDB store.)
        return self._new_store_by_url("memory://")


assets: GlobalTable = app.tables.add(  # type: ignore[assignment]  # add() returns the table it is given
    _Registry(
        app,
        name="assets",
        beacon=app.tables.beacon,  # type: ignore[attr-defined]  # TableManagerT omits it
        partitions=1,
        is_global=True,
        key_type=bytes,
        # Faust's advice for a global table read by several workers: apply its records one by one.
        standby_buffer_size=1,
        recovery_buffer_size=1,
        help="The asset registry: code and scale of every asset.",
    )
)
