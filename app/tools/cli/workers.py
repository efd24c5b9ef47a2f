"""``ubscore workers N``: run N workers on this host under a supervisor (app.tools.launcher).

A command of its own because it hands its whole command line to the launcher
unparsed: the launcher reads the count, the log level and ``--roles`` itself.
"""

from __future__ import annotations

from typing import Tuple

import click
from faust.cli.base import argument

from app.faust_app import app
from app.tools import launcher
from app.tools.cli.command import ClientCommand


@app.command(
    argument("arguments", nargs=-1, type=click.UNPROCESSED),
    base=ClientCommand,
    command_name="workers",
    context_settings={"ignore_unknown_options": True},
)
def workers(self: ClientCommand, arguments: Tuple[str, ...]) -> int:
    """N [LEVEL] [--roles ledger,sink]: run N workers here under a supervisor (app/tools/launcher.py)."""
    return launcher.main(list(arguments))
