"""What a view reads of a request: the user id of its path, its query parameters, its body.

A client's mistake here raises InvalidOperation naming the field, which the view
answers with a 4xx (app.web.answers). Query parameters are checked as strictly
as a body's fields: an unknown or repeated name is refused, not ignored.
"""

from __future__ import annotations

from typing import Dict, Tuple

from faust.web import Request

from app.core.models import MAX_ID
from app.core.wire import decimal_text
from app.errors import InvalidOperation


def parse_user_id(raw: str) -> int:
    value = decimal_text(raw, MAX_ID)
    if value is None:
        raise InvalidOperation("user_id", "invalid_user_id", f"user_id must be an integer between 1 and {MAX_ID}")
    return value


def query(request: Request, allowed: Tuple[str, ...]) -> Dict[str, str]:
    """The query parameters, refusing unknown and repeated names as the body refuses unknown fields."""
    names = [name for name, _ in request.query.items()]  # keys() folds repeated names
    for name in names:
        if name not in allowed:
            raise InvalidOperation(name[:64], "invalid_query", f"query parameter must be one of {', '.join(allowed)}")
        if names.count(name) > 1:
            raise InvalidOperation(name, "invalid_query", f"query parameter {name} is given more than once")
    return dict(request.query.items())


async def read_body(request: Request) -> bytes:
    """The body: aiohttp stops reading past UBS_MAX_BODY_BYTES (its ``client_max_size``), and ``counted`` answers."""
    return await request.read()  # type: ignore[attr-defined]  # faust.web.Request omits it
