"""The operator's commands: ``ubscore <command>`` and ``faust -A app <command>`` alike.

They are Faust app commands, so they join Faust's own click group (``worker``,
``tables``...) that both entry points run. Unlike Faust's commands they are
clients: they never start the app, join a consumer group or create a topic. They
talk to a worker's gateway over HTTP (HTTPS checked against ``UBS_WEB_TLS_CAFILE``,
app.web.tls) and read topics with plain consumers
without a group. So they do not run under Faust's command worker either (that
would print a banner and answer an error with a traceback): each runs its
coroutine itself, and any failure is one line on stderr with a non-zero status.

Settings come from the environment like a worker's (``UBS_`` names); flags
override what an operator may want to point elsewhere (``--worker URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
import sys
import time
import uuid
from typing import Any, ClassVar, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import aiohttp
import click
from faust.cli.base import AppCommand, argument, cli, option

from app.consumer_lag import read_lag
from app.core.models import KINDS
from app.faust_app import app
from app.settings import settings
from app.tools import launcher, output, verifier
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
from app.tools.gateway_client import Answer, Gateway, Unreachable
from app.tools.tail import follow
from app.topic_reader import read_topic
from app.web import tls
from app.web.auth import SCOPES, KeyFileError, digest, parse_keys

#: How long a command waits for Kafka before it gives up with one line.
KAFKA_TIMEOUT_S = 15.0
#: Exit statuses: a refusal or failure, a bad command line (click's own), nothing could be read (verify).
FAILED, USAGE, UNREADABLE = 1, 2, 2
_LEVELS = {"CRIT": "CRITICAL", "WARN": "WARNING"}


class CommandFailed(Exception):
    """Ends a command with its message as one line on stderr and ``status``."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


class OneLineUsageError(click.ClickException):
    """A bad command line in one line, instead of click's usage block."""

    exit_code = USAGE

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class OneLineCommand(click.Command):
    """A click command whose usage errors (unknown flag, bad value, missing argument) are one line."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise OneLineUsageError(f"{ctx.command_path}: {exc.format_message()}") from None


class ClientCommand(AppCommand):
    """An app command that runs as a client: no Faust worker around it, errors in one line.

    ``command_name`` names it and ``group`` is the click group it joins (Faust's
    own unless given); ``interrupted_status`` is its status after Ctrl-C.
    """

    abstract: ClassVar[bool] = True
    command_name: ClassVar[str] = ""
    group: ClassVar[Optional[click.Group]] = None
    interrupted_status: ClassVar[int] = 130
    context_settings: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def as_click_command(cls) -> click.Command:
        """Register in the group as a :class:`OneLineCommand` taking the handler's options."""

        def invoke(ctx: click.Context, *args: Any, **kwargs: Any) -> None:
            cls(ctx, *args, **kwargs)()

        command = (cls.group or cli).command(
            name=cls.command_name or cls.__name__,
            cls=OneLineCommand,
            help=cls.__doc__,
            context_settings=cls.context_settings,
        )(click.pass_context(invoke))
        for decorate in cls.options or []:
            command = decorate(command)
        return command

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Run the handler (a coroutine in a loop of its own); its result is the exit status."""
        self._quiet_logging()
        where = self.ctx.command_path
        try:
            outcome = self.run(*(self.args + args), **{**self.kwargs, **kwargs})
            status = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
        except KeyboardInterrupt:
            raise SystemExit(self.interrupted_status) from None
        except click.ClickException:
            raise
        except CommandFailed as exc:
            click.echo(f"{where}: {exc}", err=True)
            raise SystemExit(exc.status) from None
        except Unreachable as exc:
            click.echo(f"{where}: {exc}", err=True)
            raise SystemExit(FAILED) from None
        except Exception as exc:  # noqa: BLE001 - any failure is one line, never a traceback
            click.echo(f"{where}: {describe(exc)}", err=True)
            raise SystemExit(FAILED) from None
        raise SystemExit(status or 0)

    def _quiet_logging(self) -> None:
        """Client libraries log connection errors that the command reports itself: only ``-l`` shows them."""
        level = self._loglevel.upper() if self._loglevel else "CRITICAL"
        logging.basicConfig(
            level=_LEVELS.get(level, level), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
        )


def describe(exc: BaseException) -> str:
    """An exception in one line: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def worker_option() -> option:
    return option(
        "--worker",
        default=None,
        help="a worker's gateway URL [default: this host's, from UBS_WEB_HOST/UBS_ADVERTISED_HOST and UBS_WEB_PORT]",
        show_default=False,
    )


def json_option() -> option:
    return option("--json", "as_json", is_flag=True, default=False, help="print JSON instead of a table")


def gateway(url: Optional[str]) -> Gateway:
    return Gateway(url or settings.canonical_url, settings.client_secret, settings.wait_timeout_s)


def wants_json(command: AppCommand, as_json: bool) -> bool:
    """``--json`` after the command, or Faust's global one before it."""
    return as_json or command.json


async def kafka_bound(awaitable: Any, what: str) -> Any:
    """Kafka clients retry for long; a command gives up after KAFKA_TIMEOUT_S with one line."""
    try:
        return await asyncio.wait_for(awaitable, KAFKA_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise CommandFailed(
            f"{what}: no answer in {KAFKA_TIMEOUT_S:.0f} s (is Kafka at {settings.kafka_bootstrap} up,"
            f" and UBS_TOPIC_PREFIX={settings.topic_prefix!r} right?)"
        ) from None
    except (OSError, ConnectionError) as exc:
        raise CommandFailed(f"{what}: {describe(exc)}") from None
    except Exception as exc:
        raise_if_kafka(exc, f"{what}: ")
        raise


def raise_if_kafka(exc: Exception, prefix: str = "") -> None:
    """An error of the Kafka client as one line (CommandFailed); any other returns for its caller to raise."""
    if type(exc).__module__.startswith("aiokafka"):
        raise CommandFailed(f"{prefix}Kafka at {settings.kafka_bootstrap}: {describe(exc)}") from None


# --- submit -----------------------------------------------------------------------------------------


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


# --- account ----------------------------------------------------------------------------------------


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


# --- tail -------------------------------------------------------------------------------------------


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


# --- lag --------------------------------------------------------------------------------------------


@app.command(json_option(), base=ClientCommand, command_name="lag")
async def lag(self: ClientCommand, as_json: bool) -> int:
    """How far the ledger and the sink are behind their input, per partition (from Kafka's offsets)."""
    lags = await kafka_bound(read_lag(settings), "reading consumer lag")
    click.echo(json.dumps(output.lag_json(lags)) if wants_json(self, as_json) else output.lag_text(lags))
    return 0


# --- verify -----------------------------------------------------------------------------------------


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


# --- workers ----------------------------------------------------------------------------------------


@app.command(
    argument("arguments", nargs=-1, type=click.UNPROCESSED),
    base=ClientCommand,
    command_name="workers",
    context_settings={"ignore_unknown_options": True},
)
def workers(self: ClientCommand, arguments: Tuple[str, ...]) -> int:
    """N [LEVEL] [--roles ledger,sink]: run N workers here under a supervisor (app/tools/launcher.py)."""
    return launcher.main(list(arguments))


# --- dlq --------------------------------------------------------------------------------------------


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


# --- keys -------------------------------------------------------------------------------------------


@cli.group(name="keys")
def keys() -> None:
    """API keys for the gateway: make one; the workers read them from UBS_API_KEYS_FILE (docs/api-keys.md)."""


@app.command(
    option("--id", "key_id", required=True, help="the key's name in the log's audit lines", show_default=False),
    option("--scopes", required=True, help=f"comma separated, of {', '.join(SCOPES)}", show_default=False),
    option("--users", default=None, help="user ids it covers, e.g. 1000-1999,5000 [default: every user]"),
    base=ClientCommand,
    command_name="new",
    group=keys,
)
def keys_new(self: ClientCommand, key_id: str, scopes: str, users: Optional[str]) -> int:
    """A new key: its secret on the first line, shown this once, then the entry for the key file's "keys".

    Only the secret's sha256 goes into the file; the worker reads the file again on SIGHUP.
    """
    secret = secrets.token_urlsafe(32)
    entry: Dict[str, Any] = {"id": key_id, "sha256": digest(secret), "scopes": scopes.split(",")}
    if users is not None:
        entry["users"] = user_ranges(users)
    try:
        (key,) = parse_keys(json.dumps({"keys": [entry]}).encode())
    except KeyFileError as exc:
        raise CommandFailed(str(exc), USAGE) from None
    click.echo(f"UBS_API_KEY={secret}")
    click.echo(json.dumps(key.to_json()))
    click.echo("the secret is shown this once; add the entry to UBS_API_KEYS_FILE, then SIGHUP the workers", err=True)
    return 0


def user_ranges(text: str) -> List[List[int]]:
    """``1000-1999,5000`` as a key file writes it, ``[[1000, 1999], [5000, 5000]]``; the file's rules check the rest."""
    ranges = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not (first.isdigit() and (last or first).isdigit()):
            raise CommandFailed(f"--users takes user ids and ranges, e.g. 1000-1999,5000; got {part!r}", USAGE)
        ranges.append([int(first), int(last or first)])
    return ranges
