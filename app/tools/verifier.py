"""``ubscore verify``: read what the pipeline wrote and check the invariants (docs/design.md).

Run it once the pipeline is idle (no operation in flight). It reads
``balance.operations`` and ``balance.events`` (read_committed) to their current
end, the tables through a worker's HTTP API (which routes to the owner of each
user) and the database, then calls ``app.core.verification.check``. It prints a
summary and exits 1 on any violation, 2 when something could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp

from app.core.verification import Report, check
from app.settings import Settings, load
from app.sink.cql import event_from_row, new_cluster
from app.topic_reader import read_topic

Record = Tuple[Optional[bytes], bytes]
READ_TIMEOUT_S = 300.0


async def read_records(settings: Settings, base: str) -> List[Record]:
    """Every committed message of a topic up to its end when the read begins, each partition in order."""
    records = await read_topic(settings.kafka_bootstrap, settings.topic_name(base), timeout_s=READ_TIMEOUT_S)
    return [(record.key, record.value) for record in records]


async def read_tables(
    worker_url: str, users: Sequence[int], concurrency: int = 32
) -> Dict[int, Optional[Dict[str, Any]]]:
    """Each user's account as the owning worker's table holds it (404 -> None)."""
    limit = asyncio.Semaphore(concurrency)
    tables: Dict[int, Optional[Dict[str, Any]]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(user: int) -> None:
            async with limit:
                async with http.get(f"{worker_url}/accounts/{user}") as response:
                    if response.status == 404:
                        tables[user] = None
                        return
                    response.raise_for_status()
                    body = await response.json()
                    holds = {hold.pop("hold_id"): hold for hold in body["holds"]}
                    tables[user] = {"seq": body["seq"], "balances": body["balances"], "holds": holds}

        await asyncio.gather(*(one(user) for user in users))
    return tables


def read_database(settings: Settings) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """All rows of balance_events and balances in the keyspace."""
    cluster = new_cluster(settings.cql_hosts, settings.cql_port, request_timeout_s=60, rows_as_dicts=True)
    try:
        session = cluster.connect(settings.keyspace)
        events = [event_from_row(row).to_json() for row in session.execute("SELECT * FROM balance_events")]
        balances = list(session.execute("SELECT user_id, asset, available, locked, seq FROM balances"))
        return events, balances
    finally:
        cluster.shutdown()


async def verify(settings: Settings, worker_url: Optional[str], with_database: bool) -> Report:
    """Read everything and check it."""
    operations = await read_records(settings, "balance.operations")
    event_records = await read_records(settings, "balance.events")
    events = [json.loads(value) for _, value in event_records]
    users = sorted({int(e["user_id"]) for e in events})
    tables: Optional[Mapping[int, Optional[Dict[str, Any]]]] = None
    if worker_url:
        tables = await read_tables(worker_url, users)
    db_events = db_balances = None
    if with_database:
        db_events, db_balances = await asyncio.get_running_loop().run_in_executor(None, read_database, settings)
    return check(operations, events, tables, db_events, db_balances, max_operation_bytes=settings.max_body_bytes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``ubscore verify``."""
    parser = argparse.ArgumentParser(prog="ubscore verify", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker", default=None, help="a worker's URL to read the tables through (default: this host's UBS_WEB_PORT)"
    )
    parser.add_argument("--no-tables", action="store_true", help="do not compare the tables")
    parser.add_argument("--no-db", action="store_true", help="do not compare the database")
    args = parser.parse_args(argv)
    settings = load()
    worker_url = None if args.no_tables else (args.worker or settings.canonical_url)
    try:
        report = asyncio.run(verify(settings, worker_url, not args.no_db))
    except Exception as exc:  # noqa: BLE001 - any read failure ends the run with a clear line
        print(f"verify: could not read the pipeline's state: {exc!r}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1
