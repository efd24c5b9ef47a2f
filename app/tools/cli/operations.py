"""One user's operations and events: ``ubscore submit``, ``account`` and ``tail``.

What an operator does by hand with a single user: submit an operation through a
worker's gateway, read the user's balances and holds from the owner's table, and
follow the user's events on ``balance.events``.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, Dict, Optional

import click
from faust.cli.base import argument, option

from app.core.models import KINDS
from app.faust_app import app
from app.settings import settings
from app.tools import output
from app.tools.cli.command import (
    USAGE,
    ClientCommand,
    CommandFailed,
    gateway,
    json_option,
    raise_if_kafka,
    wants_json,
    worker_option,
)
from app.tools.tail import follow
from app.web import tls


def operation_from(body_text: Optional[str], fields: Dict[str, Any]) -> Dict[str, Any]:
    """The operation to POST: the JSON body (``-`` reads stdin), then every flag given, over it."""
    operation: Dict[str, Any] = {}
    if body_text is not None:
        raw = sys.stdin.read() if body_text == "-" else body_text
        try:
            operation = json.loads(raw)
        except ValueError as exc:
            raise CommandFailed(f"--json-body is not JSON: {exc}", USAGE) from None
        if not isinstance(operation, dict):
            raise CommandFailed("--json-body must be a JSON object (one operation)", USAGE)
    for name, value in fields.items():
        if value is not None:
            operation[name] = amount_value(value) if name == "amount" else value
    if "kind" not in operation:
        raise CommandFailed("give --kind (and the operation's fields) or --json-body", USAGE)
    return operation


def amount_value(text: str) -> Any:
    """Digits as a JSON integer; anything else (a decimal of a registered asset) as the string it is."""
    return int(text) if text.isdigit() else text


@app.command(
    option("--kind", type=click.Choice(KINDS), default=None, help="the operation's kind", show_default=False),
    option("--user", "user_id", type=int, default=None, help="user_id", show_default=False),
    option("--to-user", "to_user_id", type=int, default=None, help="to_user_id (transfers)", show_default=False),
    option("--asset", type=int, default=None, help="asset id", show_default=False),
    option("--amount", default=None, help="minor units, or a decimal of a registered asset", show_default=False),
    option("--op-id", "op_id", default=None, help="idempotency key [default: generated, printed]", show_default=False),
    option("--source", type=click.Choice(["available", "locked"]), default=None, show_default=False),
    option("--hold-id", "hold_id", default=None, help="a hold's id (lock, unlock, transfer)", show_default=False),
    option("--expires-at-ms", "expires_at_ms", type=int, default=None, help="a hold's expiry", show_default=False),
    option(
        "--json-body",
        "json_body",
        default=None,
        help="the operation as JSON ('-': from stdin); flags given as well replace its fields",
        show_default=False,
    ),
    option("--wait/--no-wait", default=True, help="wait for the result (200) or only for Kafka (202)"),
    worker_option(),
    base=ClientCommand,
    command_name="submit",
)
async def submit(
    self: ClientCommand, json_body: Optional[str], wait: bool, worker: Optional[str], **fields: Any
) -> int:
    """Submit one operation through a worker's gateway (POST /operations) and print the answer."""
    operation = operation_from(json_body, fields)
    if not operation.get("op_id"):
        operation["op_id"] = f"cli-{uuid.uuid4().hex[:16]}"
        click.echo(f"op_id {operation['op_id']} (generated: retry with --op-id {operation['op_id']})", err=True)
    async with tls.client_session(settings) as http:
        answer = await gateway(worker).submit(http, operation, wait)
    if not answer.ok:
        raise CommandFailed(answer.error_line())
    click.echo(json.dumps(answer.body))
    return 0


@app.command(
    argument("user_id", metavar="USER", type=int),
    worker_option(),
    json_option(),
    base=ClientCommand,
    command_name="account",
)
async def account(self: ClientCommand, user_id: int, worker: Optional[str], as_json: bool) -> int:
    """A user's balances and open holds (GET /accounts/USER), as the owner's table holds them."""
    async with tls.client_session(settings) as http:
        answer = await gateway(worker).account(http, user_id)
    if not answer.ok:
        raise CommandFailed(answer.error_line())
    click.echo(json.dumps(answer.body) if wants_json(self, as_json) else output.account_text(answer.body))
    return 0


@app.command(
    argument("user_id", metavar="USER", type=int),
    option("--from-beginning", is_flag=True, default=False, help="start with the user's first event still in Kafka"),
    option("--limit", type=click.IntRange(min=1), default=None, help="stop after this many events", show_default=False),
    json_option(),
    base=ClientCommand,
    command_name="tail",
    interrupted_status=0,
)
async def tail(self: ClientCommand, user_id: int, from_beginning: bool, limit: Optional[int], as_json: bool) -> int:
    """Follow a user's events as they are published (balance.events); Ctrl-C ends it."""
    raw = wants_json(self, as_json)

    def show(event: Dict[str, Any]) -> None:
        click.echo(json.dumps(event) if raw else output.event_line(event))
        sys.stdout.flush()

    def ready(topic: str, partition: int, offset: int) -> None:
        click.echo(f"following user {user_id} on {topic} partition {partition} from offset {offset}", err=True)

    try:
        await follow(settings, user_id, show, from_beginning=from_beginning, limit=limit, ready=ready)
    except TimeoutError as exc:
        raise CommandFailed(str(exc)) from None
    except Exception as exc:
        raise_if_kafka(exc)
        raise
    return 0
