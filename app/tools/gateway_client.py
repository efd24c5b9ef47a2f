"""The operator commands' HTTP calls to a worker's gateway.

Every answer comes back as status and JSON body, refusals included: the
commands decide what a status means (``dlq replay`` reports each one, ``submit``
ends on the first). A worker that does not answer is one exception with one
line, never the client library's traceback; the session comes from
app.web.tls, which checks an https gateway's certificate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional
from urllib.parse import quote, urlencode

import aiohttp

from app.web import tls

#: How long a worker may take to accept a connection and answer a plain read.
CONNECT_TIMEOUT_S = 10.0
#: Added to UBS_WAIT_TIMEOUT_S for a ``?wait=true`` submit: the gateway answers 504 itself by then.
WAIT_MARGIN_S = 5.0


class Unreachable(Exception):
    """The worker did not answer (refused, timed out, not HTTP)."""


@dataclass(frozen=True)
class Answer:
    """A gateway's answer: its status and its JSON body (or the text, under ``"text"``, when not JSON)."""

    status: int
    body: Dict[str, Any]

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    def error_line(self) -> str:
        """A refusal in one line: status, reason, field and message."""
        body = self.body
        field = f" ({body['field']})" if body.get("field") else ""
        reason = body.get("error") or body.get("status") or "error"
        message = body.get("message") or body.get("text") or ""
        return f"{self.status} {reason}{field}: {message}".rstrip(": ")


def bearer(secret: Optional[str]) -> Dict[str, str]:
    """The header that presents an API key's secret; none without one (a gateway open on loopback)."""
    return {"Authorization": f"Bearer {secret}"} if secret else {}


class Gateway:
    """One worker's gateway; ``secret`` is the API key sent with every request (UBS_API_KEY or UBS_API_TOKEN)."""

    def __init__(self, url: str, secret: Optional[str] = None, wait_timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.wait_timeout_s = wait_timeout_s

    async def submit(
        self, http: aiohttp.ClientSession, operation: Dict[str, Any], wait: bool, replay: Optional[str] = None
    ) -> Answer:
        """POST /operations (``?wait=true`` for the result; ``replay``: the dead letter's PARTITION:OFFSET)."""
        query = {**({"wait": "true"} if wait else {}), **({"replay": replay} if replay else {})}
        path = f"/operations?{urlencode(query)}" if query else "/operations"
        body = json.dumps(operation, separators=(",", ":"))
        timeout = self.wait_timeout_s + WAIT_MARGIN_S if wait else CONNECT_TIMEOUT_S
        headers = {"Content-Type": "application/json"}
        return await self._call(http, "POST", path, timeout, data=body, headers=headers)

    async def account(self, http: aiohttp.ClientSession, user_id: int) -> Answer:
        """GET /accounts/{user_id}."""
        return await self._call(http, "GET", f"/accounts/{user_id}", CONNECT_TIMEOUT_S)

    async def result(self, http: aiohttp.ClientSession, user_id: int, op_id: str) -> Answer:
        """GET /operations/{user_id}/{op_id}: the stored result, 404 while there is none."""
        return await self._call(http, "GET", f"/operations/{user_id}/{quote(op_id, safe='')}", CONNECT_TIMEOUT_S)

    async def _call(
        self, http: aiohttp.ClientSession, method: str, path: str, within_s: float, **kwargs: Any
    ) -> Answer:
        limits = aiohttp.ClientTimeout(total=within_s, connect=CONNECT_TIMEOUT_S)
        headers = {**kwargs.pop("headers", {}), **bearer(self.secret)}
        try:
            async with http.request(method, f"{self.url}{path}", timeout=limits, headers=headers, **kwargs) as response:
                text = await response.text()
                return Answer(response.status, _body(text))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"worker {self.url} did not answer: {tls.describe(exc)}") from None


def _body(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text.strip()[:200]}
    return value if isinstance(value, dict) else {"value": value}
