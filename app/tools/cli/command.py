"""How an operator's command runs: as a client, never as a Faust worker, and any failure in one line.

Unlike Faust's commands the operator's commands are clients: they never start the
app, join a consumer group or create a topic. They talk to a worker's gateway
over HTTP (HTTPS checked against ``UBS_WEB_TLS_CAFILE``, app.web.tls) and read
topics with plain consumers without a group. So they do not run under Faust's
command worker either (that would print a banner and answer an error with a
traceback): each runs its coroutine itself, and any failure is one line on
stderr with a non-zero status. The options and helpers every command group
shares live here too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import Any, ClassVar, Dict, List, NoReturn, Optional

import click
from faust.cli.base import AppCommand, cli, option

from app.settings import settings
from app.tools.gateway_client import Gateway, Unreachable

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
