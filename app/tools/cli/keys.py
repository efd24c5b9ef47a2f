"""``ubscore keys new``: make an API key for the gateway (docs/api-keys.md).

It prints the secret once and the entry for UBS_API_KEYS_FILE, checked by the
same rules (app.web.auth) the workers read the file with; it never writes the file.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Dict, List, Optional

import click
from faust.cli.base import cli, option

from app.faust_app import app
from app.tools.cli.command import USAGE, ClientCommand, CommandFailed
from app.web.auth import SCOPES, KeyFileError, digest, parse_keys


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
