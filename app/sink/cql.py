"""The settlement database (ScyllaDB in production, Cassandra locally), behind one class.

cassandra-driver is callback based; ``_wait`` turns its futures into asyncio
awaitables so the sink and the views never block the event loop. The keyspace
and tables are created when missing. Writes carry ``USING TIMESTAMP <seq>``: the
database keeps the cell with the highest timestamp, so a replayed or reordered
event can rewrite a row but never move a balance back to an older seq.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from app.core.models import Event, Trade
from app.errors import SettlementUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)

STATEMENTS_PER_BATCH = 50
PROTOCOL_VERSION = 4

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {ks}.balance_events (
        user_id bigint,
        seq bigint,
        op_id text,
        kind text,
        asset int,
        amount bigint,
        status text,
        reason text,
        available varint,
        locked varint,
        ts timestamp,
        counterparty bigint,
        hold_id text,
        role text,
        changes text,
        trade text,
        reserved_after_seq bigint,
        PRIMARY KEY ((user_id), seq)
    ) WITH CLUSTERING ORDER BY (seq DESC)
    """,
    """
    CREATE TABLE IF NOT EXISTS {ks}.trades (
        buyer bigint,
        trade_id text,
        seller bigint,
        buyer_hold text,
        seller_hold text,
        base_asset int,
        quote_asset int,
        base_amount bigint,
        quote_amount bigint,
        buyer_fee bigint,
        seller_fee bigint,
        fee_account bigint,
        ts timestamp,
        PRIMARY KEY ((buyer), trade_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {ks}.balances (
        user_id bigint,
        asset int,
        available varint,
        locked varint,
        seq bigint,
        updated_at timestamp,
        PRIMARY KEY ((user_id), asset)
    )
    """,
)

#: Columns added after the first release, to keyspaces created before them: (table, column, type).
ADDED_COLUMNS = (
    ("balance_events", "hold_id", "text"),
    ("balance_events", "role", "text"),
    ("balance_events", "changes", "text"),
    ("balance_events", "trade", "text"),
    ("balance_events", "reserved_after_seq", "bigint"),
)

EVENT_COLUMNS = (
    "user_id, seq, op_id, kind, asset, amount, status, reason, available, locked, ts, counterparty, hold_id,"
    " role, changes, trade, reserved_after_seq"
)
INSERT_EVENT = (
    f"INSERT INTO {{ks}}.balance_events ({EVENT_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
)
INSERT_TRADE = (
    "INSERT INTO {ks}.trades (buyer, trade_id, seller, buyer_hold, seller_hold, base_asset, quote_asset,"
    " base_amount, quote_amount, buyer_fee, seller_fee, fee_account, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_BALANCE = (
    "INSERT INTO {ks}.balances (user_id, asset, available, locked, seq, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
)
SELECT_EVENTS = f"SELECT {EVENT_COLUMNS} FROM {{ks}}.balance_events WHERE user_id = ? LIMIT ?"


def new_cluster(settings: Settings, request_timeout_s: float = 10.0, rows_as_dicts: bool = False) -> Any:
    """The one way UBSCore opens a CQL cluster (the sink, the verifier, the benchmarks and the tests alike).

    Protocol v4 is spoken by ScyllaDB and Cassandra alike, so there is no downgrade
    dance at connect. The driver's default reconnection backs off up to 10 minutes;
    a sink must notice a returned database within seconds. Each request goes to a
    replica of its partition in the local datacenter (``UBS_CQL_LOCAL_DC``; without
    one, the first contact point's, which is all there is on a one-node stack), at
    ``UBS_CQL_CONSISTENCY``: the sink's writes and the history reads alike.
    """
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
    from cassandra.query import dict_factory, named_tuple_factory

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.cql_local_dc or "")),
        consistency_level=ConsistencyLevel.name_to_value[settings.cql_consistency],
        request_timeout=request_timeout_s,
        row_factory=dict_factory if rows_as_dicts else named_tuple_factory,
    )
    return Cluster(
        contact_points=list(settings.cql_hosts),
        port=settings.cql_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5,
        protocol_version=PROTOCOL_VERSION,
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
        auth_provider=_auth_provider(settings),
        ssl_context=_ssl_context(settings),
    )


def _auth_provider(settings: Settings) -> Any:
    """Password authentication when ``UBS_CQL_USERNAME`` is set (app.settings.load requires its password)."""
    if settings.cql_username is None or settings.cql_password is None:
        return None
    from cassandra.auth import PlainTextAuthProvider

    return PlainTextAuthProvider(username=settings.cql_username, password=settings.cql_password.reveal())


def _ssl_context(settings: Settings) -> Optional[ssl.SSLContext]:
    """TLS when ``UBS_CQL_SSL_CAFILE`` is set: nodes must present a certificate that CA signed.

    Host names are not checked: the driver connects to every node by the address
    the cluster reports for it (system.peers), not by the name a certificate is
    issued for, so a hostname check would refuse all but the contact points. The
    chain is still verified (CERT_REQUIRED), so only nodes the CA vouches for are
    talked to.
    """
    if settings.cql_ssl_cafile is None:
        return None
    context = ssl.create_default_context(cafile=settings.cql_ssl_cafile)
    context.check_hostname = False
    if settings.cql_ssl_certfile is not None:
        context.load_cert_chain(settings.cql_ssl_certfile, settings.cql_ssl_keyfile)
    return context


def keyspace_replication(settings: Settings) -> str:
    """The replication map of a keyspace UBSCore creates, as CQL.

    With a local datacenter named, ``NetworkTopologyStrategy`` places the replicas
    there, where LOCAL_QUORUM counts them (ScyllaDB also refuses SimpleStrategy
    where it is restricted); without one, ``SimpleStrategy`` suits a one-datacenter
    stack.
    """
    factor = settings.cql_replication_factor
    if settings.cql_local_dc:
        datacenter = settings.cql_local_dc.replace("'", "''")
        return f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': {factor}}}"
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"


class BalanceRow(NamedTuple):
    """One (user, asset) balance as an event left it."""

    user_id: int
    asset: int
    available: int
    locked: int
    seq: int
    ts: int


def latest_balances(events: Iterable[Event]) -> List[BalanceRow]:
    """Per (user, asset), the row of the highest seq: the only balance write a batch needs."""
    newest: Dict[Tuple[int, int], BalanceRow] = {}
    for event in events:
        for change in event.balances():
            row = BalanceRow(event.user_id, change.asset, change.available, change.locked, event.seq, event.ts)
            key = (row.user_id, row.asset)
            if key not in newest or newest[key].seq < row.seq:
                newest[key] = row
    return list(newest.values())


class CqlStore:
    """Connection, schema, prepared statements and the reads and writes of settlement."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyspace = settings.keyspace
        self._cluster: Any = None
        self._session: Any = None
        self._insert_event: Any = None
        self._upsert_balance: Any = None
        self._insert_trade: Any = None
        self._select_events: Any = None
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True once a session exists (the database may still fail a later request)."""
        return self._session is not None

    async def connect(self) -> None:
        """Open a session, create the schema if missing and prepare statements (idempotent)."""
        async with self._connect_lock:
            if self._session is not None:
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self._connect_blocking)
            except Exception as exc:  # noqa: BLE001 - the driver raises many types for "not reachable"
                self.close()
                raise SettlementUnavailable(f"cannot reach CQL at {self.settings.cql_hosts}: {exc}") from exc

    def _connect_blocking(self) -> None:
        cluster = new_cluster(self.settings)
        self._cluster = cluster
        session = cluster.connect()
        ks = self.keyspace
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {keyspace_replication(self.settings)}")
        for statement in SCHEMA:
            session.execute(statement.format(ks=ks))
        _add_columns(session, ks)
        self._insert_event = session.prepare(INSERT_EVENT.format(ks=ks))
        self._upsert_balance = session.prepare(UPSERT_BALANCE.format(ks=ks))
        self._insert_trade = session.prepare(INSERT_TRADE.format(ks=ks))
        self._select_events = session.prepare(SELECT_EVENTS.format(ks=ks))
        self._session = session
        log.info(
            "cql_connected hosts=%s port=%s keyspace=%s", ",".join(self.settings.cql_hosts), self.settings.cql_port, ks
        )

    def close(self) -> None:
        """Drop the session; the next connect() starts afresh."""
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = None
        self._session = None

    async def write_events(self, events: Sequence[Event]) -> None:
        """Write events and the newest balance they imply, batched per user, bounded in flight.

        Returns only when the database acknowledged every statement; raises
        SettlementUnavailable otherwise, and the caller retries the whole set
        (every write is idempotent).
        """
        from cassandra.query import BatchStatement, BatchType

        await self.connect()
        per_user: Dict[int, List[Tuple[Any, Tuple[Any, ...]]]] = defaultdict(list)
        for event in events:
            per_user[event.user_id].append((self._insert_event, event_row(event)))
        for balance in latest_balances(events):
            per_user[balance.user_id].append((self._upsert_balance, _balance_row(balance)))
        for event in events:
            if event.kind == "trade" and event.role == "buyer" and event.accepted and event.trade is not None:
                per_user[event.user_id].append((self._insert_trade, trade_row(event.trade, event.ts)))

        batches = []
        for statements in per_user.values():
            for start in range(0, len(statements), STATEMENTS_PER_BATCH):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for prepared, row in statements[start : start + STATEMENTS_PER_BATCH]:
                    batch.add(prepared, row)
                batches.append(batch)

        limit = asyncio.Semaphore(self.settings.sink_concurrency)

        async def run(batch: Any) -> None:
            async with limit:
                await self._execute(batch)

        outcomes = await asyncio.gather(*(run(batch) for batch in batches), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise SettlementUnavailable(f"{len(failures)} of {len(batches)} batches failed: {failures[0]!r}")

    async def events(self, user_id: int, limit: int) -> List[Dict[str, Any]]:
        """The newest ``limit`` events of a user, newest first."""
        await self.connect()
        rows = await self._execute(self._select_events.bind((user_id, limit)))
        return [_row_to_event(row) for row in rows]

    async def _execute(self, statement: Any) -> Any:
        session = self._session
        if session is None:
            raise SettlementUnavailable("no CQL session")
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def on_result(rows: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, rows, None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_settle, done, None, exc)

        session.execute_async(statement).add_callbacks(on_result, on_error)
        return await done


def _add_columns(session: Any, ks: str) -> None:
    """Bring a keyspace made by an older release up to the current columns.

    ``ALTER TABLE ... ADD IF NOT EXISTS`` is not spoken by every CQL database, so
    the schema tables are asked; a sink that lost the race to another one finds
    the column there on its second look.
    """
    from cassandra import InvalidRequest

    def present() -> set:
        rows = session.execute(
            "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = %s", (ks,)
        )
        return {(row.table_name, row.column_name) for row in rows}

    existing = present()
    for table, column, cql_type in ADDED_COLUMNS:
        if (table, column) in existing:
            continue
        try:
            session.execute(f"ALTER TABLE {ks}.{table} ADD {column} {cql_type}")
        except InvalidRequest:
            if (table, column) not in present():
                raise
        log.info("cql_column_added keyspace=%s table=%s column=%s", ks, table, column)


def _settle(future: asyncio.Future, rows: Any, exc: Optional[BaseException]) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows if rows is not None else [])


def _unset_nulls(row: Tuple[Any, ...]) -> Tuple[Any, ...]:
    # A bound null writes a tombstone; UNSET writes nothing, and events are immutable.
    from cassandra.query import UNSET_VALUE

    return tuple(UNSET_VALUE if value is None else value for value in row)


def event_row(event: Event) -> Tuple[Any, ...]:
    """The bound values of INSERT_EVENT for one event (also what bench/baselines.py inserts raw)."""
    body = event.to_json()
    return _unset_nulls(
        (
            event.user_id,
            event.seq,
            event.op_id,
            event.kind,
            event.asset,
            event.amount,
            event.status,
            event.reason,
            event.available,
            event.locked,
            _timestamp(event.ts),
            event.counterparty,
            event.hold_id,
            event.role,
            _json_text(body.get("changes")),
            _json_text(body.get("trade")),
            event.reserved_after_seq,
            event.seq,
        )
    )


def trade_row(trade: Trade, ts: int) -> Tuple[Any, ...]:
    """The bound values of INSERT_TRADE: a settled trade, written from its buyer's event."""
    return (
        trade.buyer.user_id,
        trade.op_id,
        trade.seller.user_id,
        trade.buyer.hold_id,
        trade.seller.hold_id,
        trade.base_asset,
        trade.quote_asset,
        trade.base_amount,
        trade.quote_amount,
        trade.buyer_fee,
        trade.seller_fee,
        trade.fee_account,
        _timestamp(ts),
    )


def _json_text(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _timestamp(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)


def _balance_row(row: BalanceRow) -> Tuple[Any, ...]:
    return (row.user_id, row.asset, row.available, row.locked, row.seq, _timestamp(row.ts), row.seq)


def epoch_ms(ts: Optional[datetime]) -> Optional[int]:
    if ts is None:
        return None
    # The driver hands back naive datetimes that are UTC.
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
    return int(round(aware.timestamp() * 1000))


def event_from_row(row: Mapping[str, Any]) -> Event:
    """An event read back from balance_events (a row as a dict), exactly as the ledger sent it."""
    body = dict(row)
    body["ts"] = epoch_ms(body["ts"])
    for name in ("changes", "trade"):
        if body.get(name) is not None:
            body[name] = json.loads(body[name])
    return Event.from_json(body)


def _row_to_event(row: Any) -> Dict[str, Any]:
    return event_from_row(row._asdict()).to_json()
