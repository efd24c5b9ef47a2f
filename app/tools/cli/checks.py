"""Is the pipeline keeping up, and do its invariants hold: ``ubscore lag`` and ``ubscore verify``.

Both read what Kafka (and, for verify, the tables and the database) hold now
and report it; neither changes anything. verify shows its progress while it
reads, a bar on a terminal and a line a stage elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Iterator, List, Optional

import click
from faust.cli.base import option

from app.faust_app import app
from app.observability.consumer_lag import read_lag
from app.settings import settings
from app.tools import output, verifier
from app.tools.cli.command import (
    UNREADABLE,
    ClientCommand,
    CommandFailed,
    describe,
    json_option,
    kafka_bound,
    wants_json,
    worker_option,
)


@app.command(json_option(), base=ClientCommand, command_name="lag")
async def lag(self: ClientCommand, as_json: bool) -> int:
    """How far the ledger and the sink are behind their input, per partition (from Kafka's offsets)."""
    lags = await kafka_bound(read_lag(settings), "reading consumer lag")
    click.echo(json.dumps(output.lag_json(lags)) if wants_json(self, as_json) else output.lag_text(lags))
    return 0


@app.command(
    worker_option(),
    option("--no-tables", is_flag=True, default=False, help="do not compare the tables"),
    option("--no-db", is_flag=True, default=False, help="do not compare the database"),
    base=ClientCommand,
    command_name="verify",
)
async def verify(self: ClientCommand, worker: Optional[str], no_tables: bool, no_db: bool) -> int:
    """Check every invariant over the topics, the tables and the database (once the pipeline is idle).

    Exit 0 when all hold, 1 on a violation, 2 when something could not be read.
    """
    worker_url = None if no_tables else (worker or settings.canonical_url)
    steps = verifier.stages(worker_url is not None, not no_db)
    with verify_progress(steps) as done:
        try:
            report = await verifier.verify(settings, worker_url, not no_db, on_stage=done)
        except Exception as exc:  # noqa: BLE001 - any read failure ends the run with a clear line
            raise CommandFailed(f"could not read the pipeline's state: {describe(exc)}", UNREADABLE) from None
    click.echo(report.summary())
    return 0 if report.ok else 1


@contextlib.contextmanager
def verify_progress(steps: List[str]) -> Iterator[verifier.Stage]:
    """A progress bar over the reading stages on a terminal; elsewhere (a pipe, a log) a line per stage."""
    if not sys.stderr.isatty():

        def line(stage: str, count: int) -> None:
            click.echo(f"verify: [{steps.index(stage) + 1}/{len(steps)}] {stage}: {count} read", err=True)

        yield line
        return
    with click.progressbar(
        length=len(steps),
        label="verify: reading",
        file=sys.stderr,
        show_pos=True,
        item_show_func=lambda item: item,
    ) as bar:

        def advance(stage: str, count: int) -> None:
            bar.update(1, f"{stage}: {count} read")

        yield advance
