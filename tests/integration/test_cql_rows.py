"""The settlement database's row mapping (app.sink.cql), written and read back through CqlStore itself.

The sink is the one writer of the database and the history view reads it back, so
an event must come back exactly as Event.to_json() gave it: nulls stay null (not
zero, not a tombstone), counterparties and millisecond timestamps survive, and a
balance beyond 2**63 is not cut to 64 bits. The balances table must hold the
newest seq per (user, asset) however late an older event is written.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Iterator, List

import pytest

from app.core.models import Event
from app.sink.cql import CqlStore, epoch_ms

from .harness import cql_settings, fresh_user_id

pytestmark = pytest.mark.integration

TS = 1_700_000_000_123  # milliseconds that are not a whole second


@pytest.fixture(scope="module")
def keyspace(cql: Any) -> Iterator[str]:
    name = f"ubscore_rows_{uuid.uuid4().hex[:12]}"
    yield name
    cql.execute(f"DROP KEYSPACE IF EXISTS {name}")


@pytest.fixture()
async def store(keyspace: str) -> AsyncIterator[CqlStore]:
    settings = cql_settings(UBS_KEYSPACE=keyspace)
    store = CqlStore(settings)
    try:
        yield store
    finally:
        store.close()


def event(user: int, seq: int, **fields: Any) -> Event:
    body = {
        "op_id": f"op-{seq}",
        "kind": "deposit",
        "user_id": user,
        "asset": 1,
        "amount": 10,
        "status": "accepted",
        "reason": None,
        "available": 10 * seq,
        "locked": 0,
        "seq": seq,
        "ts": TS + seq,
        "counterparty": None,
    }
    body.update(fields)
    return Event.from_json(body)


def balance_rows(cql: Any, keyspace: str, user: int) -> List[Any]:
    query = f"SELECT asset, available, locked, seq, updated_at FROM {keyspace}.balances WHERE user_id = %s"
    return sorted(cql.execute(query, (user,)), key=lambda row: row.asset)


async def test_events_read_back_field_for_field_newest_first(store: CqlStore) -> None:
    user, payee = fresh_user_id(), fresh_user_id()
    written = [
        event(user, 1, amount=100, available=100),
        event(
            user,
            2,
            kind="unknown",
            status="rejected",
            reason="unknown_kind",
            asset=None,
            amount=None,
            available=None,
            locked=None,
        ),
        event(user, 3, kind="transfer_out", amount=40, available=60, counterparty=payee),
        event(user, 4, kind="transfer_in", asset=2, amount=2**63 - 1, available=2**64 + 5, locked=2**70),
        event(user, 5, kind="lock", asset=2, amount=5, available=2**64, locked=2**70 + 5),
        event(user, 6, kind="hold_expired", op_id="order-9", hold_id="order-9", asset=2, amount=5, locked=2**70),
    ]
    await store.write_events(written)
    read = await store.events(user, 10)
    assert read == [e.to_json() for e in reversed(written)]
    assert read[-2]["asset"] is None and read[-2]["available"] is None  # null, not 0
    assert await store.events(user, 2) == [written[5].to_json(), written[4].to_json()]
    assert await store.events(fresh_user_id(), 10) == []


async def test_balances_hold_the_newest_seq_per_user_and_asset(store: CqlStore, cql: Any, keyspace: str) -> None:
    user = fresh_user_id()
    await store.write_events(
        [
            event(user, 1, available=100),
            event(user, 2, asset=2, available=2**64 + 1, locked=3),
            event(user, 3, available=70, locked=30),
            event(user, 4, status="rejected", reason="unknown_kind", asset=None, available=None, locked=None),
        ]
    )
    rows = balance_rows(cql, keyspace, user)
    assert [(r.asset, r.available, r.locked, r.seq) for r in rows] == [(1, 70, 30, 3), (2, 2**64 + 1, 3, 2)]
    assert [epoch_ms(r.updated_at) for r in rows] == [TS + 3, TS + 2]


async def test_an_older_event_written_later_never_moves_a_balance_back(
    store: CqlStore, cql: Any, keyspace: str
) -> None:
    user = fresh_user_id()
    newer, older = event(user, 10, available=500, locked=1), event(user, 9, available=400, locked=2)
    await store.write_events([newer])
    await store.write_events([older])  # a replay, or a batch that lost a race
    (row,) = balance_rows(cql, keyspace, user)
    assert (row.available, row.locked, row.seq, epoch_ms(row.updated_at)) == (500, 1, 10, newer.ts)
    assert await store.events(user, 10) == [newer.to_json(), older.to_json()]  # the event itself is kept
    await store.write_events([newer, older])  # the same again, in one batch: idempotent
    assert [(r.available, r.seq) for r in balance_rows(cql, keyspace, user)] == [(500, 10)]
    assert len(await store.events(user, 10)) == 2


async def test_a_keyspace_of_an_older_release_gains_the_new_columns(cql: Any) -> None:
    """The first release's balance_events had no hold_id; the sink adds it and then writes holds."""
    name = f"ubscore_old_{uuid.uuid4().hex[:12]}"
    cql.execute(f"CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}")
    try:
        cql.execute(
            f"CREATE TABLE {name}.balance_events (user_id bigint, seq bigint, op_id text, kind text, asset int,"
            " amount bigint, status text, reason text, available varint, locked varint, ts timestamp,"
            " counterparty bigint, PRIMARY KEY ((user_id), seq)) WITH CLUSTERING ORDER BY (seq DESC)"
        )
        settings = cql_settings(UBS_KEYSPACE=name)
        for _ in range(2):  # a second sink finds the column there
            store = CqlStore(settings)
            try:
                user = fresh_user_id()
                written = event(user, 1, kind="lock", hold_id="h-1")
                await store.write_events([written])
                assert await store.events(user, 1) == [written.to_json()]
            finally:
                store.close()
    finally:
        cql.execute(f"DROP KEYSPACE IF EXISTS {name}")
