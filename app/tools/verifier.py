"""``ubscore verify``: read what the pipeline wrote and check the invariants (docs/design.md).

Run it once the pipeline is idle (no operation in flight). It reads
``balance.operations`` and ``balance.events`` (read_committed) to their current
end, the tables through a worker's HTTP API (which routes to the owner of each
user), the accounts table's changelog (what a rebuild reads) and the database,
then calls ``app.core.verification.check``. The command (app.tools.cli.checks)
prints a summary and exits 1 on any violation, 2 when something could not be
read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp

from app.core.verification import Report, check
from app.settings import Settings
from app.settings import settings as process_settings
from app.sink.cql import event_from_row, new_cluster
from app.tools.gateway_client import bearer
from app.topic_reader import read_topic
from app.web import tls

Record = Tuple[Optional[bytes], bytes]
READ_TIMEOUT_S = 300.0
#: Holds per page when an account has more than its answer lists (the holds view's largest page).
HOLDS_PAGE = 1000
#: Told each reading stage's name and how many records or rows it read, once the stage is done.
Stage = Callable[[str, int], None]


async def read_records(settings: Settings, base: str) -> List[Record]:
    """Every committed message of a topic up to its end when the read begins, each partition in order."""
    records = await read_topic(settings.kafka_bootstrap, settings.topic_name(base), timeout_s=READ_TIMEOUT_S)
    return [(record.key, record.value) for record in records]


async def read_tables(
    worker_url: str,
    users: Sequence[int],
    concurrency: int = 32,
    secret: Optional[str] = None,
    config: Optional[Settings] = None,
) -> Dict[int, Optional[Dict[str, Any]]]:
    """Each user's account as the owning worker's tables hold it, with all its open holds (404 -> None).

    An account's answer lists its first holds; one with more (``holds_more``) is
    read on through the holds view, a page at a time. ``secret``: an API key with
    ``accounts:read`` for every user, when the worker has keys. ``config``: whose
    ``UBS_WEB_TLS_CAFILE`` an https worker is checked against (this process's settings when None).
    """
    limit = asyncio.Semaphore(concurrency)
    tables: Dict[int, Optional[Dict[str, Any]]] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with tls.client_session(config or process_settings, timeout=timeout, headers=bearer(secret)) as http:

        async def one(user: int) -> None:
            async with limit:
                async with http.get(f"{worker_url}/accounts/{user}") as response:
                    if response.status == 404:
                        tables[user] = None
                        return
                    response.raise_for_status()
                    body = await response.json()
                listed = body["holds"]
                if body.get("holds_more"):
                    listed = await _all_holds(http, worker_url, user)
                holds = {hold.pop("hold_id"): hold for hold in listed}
                tables[user] = {"seq": body["seq"], "balances": body["balances"], "holds": holds}

        await asyncio.gather(*(one(user) for user in users))
    return tables


async def _all_holds(http: aiohttp.ClientSession, worker_url: str, user: int) -> List[Dict[str, Any]]:
    """Every open hold of a user, following the holds view's pages."""
    found: List[Dict[str, Any]] = []
    page: Optional[str] = f"/accounts/{user}/holds?limit={HOLDS_PAGE}"
    while page is not None:
        async with http.get(f"{worker_url}{page}") as response:
            response.raise_for_status()
            body = await response.json()
        found.extend(body["holds"])
        page = body["next"]
    return found


def read_database(settings: Settings) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """All rows of balance_events and balances in the keyspace."""
    cluster = new_cluster(settings, request_timeout_s=60, rows_as_dicts=True)
    try:
        session = cluster.connect(settings.keyspace)
        events = [event_from_row(row).to_json() for row in session.execute("SELECT * FROM balance_events")]
        balances = list(session.execute("SELECT user_id, asset, available, locked, seq FROM balances"))
        return events, balances
    finally:
        cluster.shutdown()


async def verify(
    settings: Settings, worker_url: Optional[str], with_database: bool, on_stage: Optional[Stage] = None
) -> Report:
    """Read everything and check it; ``on_stage`` hears each reading stage done and how much it read."""
    done = on_stage or _quiet
    operations = await read_records(settings, "balance.operations")
    done("operations", len(operations))
    event_records = await read_records(settings, "balance.events")
    done("events", len(event_records))
    events = [json.loads(value) for _, value in event_records]
    users = sorted({int(e["user_id"]) for e in events})
    tables: Optional[Mapping[int, Optional[Dict[str, Any]]]] = None
    if worker_url:
        tables = await read_tables(worker_url, users, secret=settings.client_secret, config=settings)
        done("tables", len(tables))
    changelog = await read_topic(
        settings.kafka_bootstrap, settings.changelog_name("accounts"), timeout_s=READ_TIMEOUT_S
    )
    done("changelog", len(changelog))
    db_events = db_balances = None
    if with_database:
        db_events, db_balances = await asyncio.get_running_loop().run_in_executor(None, read_database, settings)
        done("database", len(db_events) + len(db_balances))
    return check(
        operations,
        events,
        tables,
        db_events,
        db_balances,
        [(record.key, record.value) for record in changelog],
        max_operation_bytes=settings.max_body_bytes,
        max_assets=settings.max_assets_per_account,
    )


def stages(with_tables: bool, with_database: bool) -> List[str]:
    """The reading stages a run goes through, in order (for a progress display)."""
    return (
        ["operations", "events"]
        + (["tables"] if with_tables else [])
        + ["changelog"]
        + (["database"] if with_database else [])
    )


def _quiet(stage: str, count: int) -> None:
    """No progress display."""
