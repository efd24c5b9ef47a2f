"""``ubscore dlq list`` and ``ubscore dlq replay``: the dead letters of balance.operations.dlq.

The command line of app.tools.dlq (which selects and corrects letters): it reads
the topic, applies the filters given as flags, and prints the letters or
submits them again, corrected, through a worker's gateway, a line a letter.
"""

from __future__ import annotations

import json
import time
from typing import Any, List, Optional, Sequence, Tuple

import aiohttp
import click
from faust.cli.base import cli, option

from app.faust_app import app
from app.settings import settings
from app.tools import output
from app.tools.cli.command import (
    FAILED,
    KAFKA_TIMEOUT_S,
    USAGE,
    ClientCommand,
    CommandFailed,
    gateway,
    json_option,
    kafka_bound,
    wants_json,
    worker_option,
)
from app.tools.dlq import (
    DeadLetter,
    NotReplayable,
    Selection,
    letter_from_record,
    parse_correction,
    parse_position,
    parse_time,
    replay_operation,
    select,
)
from app.tools.gateway_client import Answer, Gateway
from app.topic_reader import read_topic
from app.web import tls


@cli.group(name="dlq")
def dlq() -> None:
    """Dead letters of balance.operations.dlq: list them, replay them (corrected) through the gateway."""


def selection_options() -> List[option]:
    return [
        option("--reason", default=None, help="only this error reason (invalid_amount...)", show_default=False),
        option("--since", default=None, help="from this time: ISO (2026-12-01T10:00, UTC) or ago (30m, 1h, 2d)"),
        option("--until", default=None, help="before this time, the same forms", show_default=False),
        option("--user", type=int, default=None, help="only letters naming this user", show_default=False),
        option("--limit", type=click.IntRange(min=1), default=None, help="the newest N at most", show_default=False),
    ]


def selection_of(
    reason: Optional[str],
    since: Optional[str],
    until: Optional[str],
    user: Optional[int],
    limit: Optional[int],
    position: Optional[str] = None,
) -> Selection:
    """The filters given on the command line; a bad time or position is a usage error."""
    now_ms = int(time.time() * 1000)
    try:
        return Selection(
            reason=reason,
            since_ms=parse_time(since, now_ms) if since else None,
            until_ms=parse_time(until, now_ms) if until else None,
            user=user,
            position=parse_position(position) if position else None,
            limit=limit,
        )
    except ValueError as exc:
        raise CommandFailed(str(exc), USAGE) from None


async def read_letters() -> List[DeadLetter]:
    """Every letter in balance.operations.dlq now."""
    topic = settings.topic_name("balance.operations.dlq")
    records = await kafka_bound(
        read_topic(settings.kafka_bootstrap, topic, timeout_s=KAFKA_TIMEOUT_S), f"reading {topic}"
    )
    return [letter_from_record(r.partition, r.offset, r.timestamp, r.value or b"") for r in records]


@app.command(
    *selection_options(),
    json_option(),
    base=ClientCommand,
    command_name="list",
    group=dlq,
)
async def dlq_list(self: ClientCommand, as_json: bool, **filters: Any) -> int:
    """Dead letters, oldest first: place (PARTITION:OFFSET), time, reason, field, user and value."""
    selection = selection_of(**filters)
    letters = select(await read_letters(), selection)
    if wants_json(self, as_json):
        click.echo(json.dumps([letter.to_json() for letter in letters]))
    elif letters:
        click.echo(output.letters_text(letters))
    else:
        click.echo("no dead letters match", err=True)
    return 0


@app.command(
    *selection_options(),
    option("--offset", "position", default=None, help="only the letter at PARTITION:OFFSET", show_default=False),
    option("--set", "corrections", multiple=True, help="FIELD=VALUE applied to the operation (JSON value or text)"),
    option("--dry-run", is_flag=True, default=False, help="print what would be sent, send nothing"),
    worker_option(),
    base=ClientCommand,
    command_name="replay",
    group=dlq,
)
async def dlq_replay(
    self: ClientCommand,
    position: Optional[str],
    corrections: Sequence[str],
    dry_run: bool,
    worker: Optional[str],
    **filters: Any,
) -> int:
    """Submit dead letters again through the gateway, corrected with --set; one line per letter.

    A corrected operation gets its own op_id (the original's with .r and a digest of the
    correction), so the same replay twice applies once. Exit 1 if any replay was refused.
    """
    try:
        fixes = [parse_correction(text) for text in corrections]
    except ValueError as exc:
        raise CommandFailed(str(exc), USAGE) from None
    selection = selection_of(position=position, **filters)
    letters = select(await read_letters(), selection)
    if not letters:
        click.echo("no dead letters match", err=True)
        return FAILED if position else 0
    failed = 0
    async with tls.client_session(settings) as http:
        for letter in letters:
            failed += not await replay_one(http, gateway(worker), letter, fixes, dry_run)
    return FAILED if failed else 0


async def replay_one(
    http: aiohttp.ClientSession, gate: Gateway, letter: DeadLetter, fixes: List[Tuple[List[str], Any]], dry_run: bool
) -> bool:
    """Replay one letter and print its line; False when the gateway refused it."""
    head = f"{letter.position} {letter.reason}"
    try:
        operation = replay_operation(letter, fixes)
    except NotReplayable as why:
        click.echo(f"{head}: not replayable, skipped: {why}")
        return True
    body = json.dumps(operation, separators=(",", ":"))
    if dry_run:
        click.echo(f"{head}: would send {body}")
        return True
    user, op_id = operation.get("user_id"), str(operation["op_id"])
    before = await gate.result(http, user, op_id) if isinstance(user, int) else None
    answer = await gate.submit(http, operation, wait=True, replay=letter.position)
    click.echo(f"{head}: op_id {op_id} -> {replay_outcome(answer, before)}")
    return answer.ok


def replay_outcome(answer: Answer, before: Optional[Answer]) -> str:
    """The gateway's answer in a few words: status code, result status and reason, seq; a duplicate said so."""
    if not answer.ok:
        return answer.error_line()
    body = answer.body
    words = [str(answer.status), str(body.get("status"))]
    if body.get("reason"):
        words.append(str(body["reason"]))
    if body.get("seq") is not None:
        words.append(f"seq={body['seq']}")
    if before is not None and before.ok:
        words.append("(duplicate: the op_id already had this result)")
    return " ".join(words)
