"""HTTP/1.1 over a raw socket, for tests of what a client does between the bytes: slow, partial, chunked.

aiohttp's client sends a request whole and reads its answer whole; these send exactly
the bytes a test writes, when it writes them, and notice when the server hangs up.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, Tuple

#: Status, headers (lower-case names) and body (decoded when JSON).
Answer = Tuple[int, Dict[str, str], Any]


class Client:
    """One connection to a server on 127.0.0.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def to(cls, port: int) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def drip(self, data: bytes, every_s: float) -> None:
        """``data`` a byte at a time, until it is all sent or the server has closed the connection."""
        try:
            for byte in data:
                await self.send(bytes([byte]))
                await asyncio.sleep(every_s)
        except OSError:
            pass

    async def answer(self, timeout_s: float = 10.0) -> Answer:
        """The next response."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout_s)
        status_line, *lines = head.decode().strip().split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        raw = await asyncio.wait_for(self.reader.readexactly(length), timeout_s)
        body = json.loads(raw) if headers.get("content-type", "").startswith("application/json") else raw
        return int(status_line.split()[1]), headers, body

    async def closed_after(self, since: float, timeout_s: float = 10.0) -> float:
        """Seconds from ``since`` (a ``time.monotonic()``) until the server closed the connection, then closed here.

        Raises TimeoutError if it is still open after ``timeout_s``; anything it sends meanwhile is dropped.
        """
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout_s):
                pass
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - since
        self.close()
        return elapsed

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, body: bytes = b"", chunked: bool = False, headers: str = "") -> bytes:
    """A request as the wire carries it; ``headers`` are extra lines (each ending CRLF); chunks of 1000 bytes."""
    head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{headers}"
    if not chunked:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    chunks = [body[start : start + 1000] for start in range(0, len(body), 1000)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + encoded
