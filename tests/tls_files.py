"""Throwaway certificate authorities and gateway certificates for the TLS tests, made by ``openssl`` at each run,
and a server on loopback to present them.

No private key lives in the repository. The certificates carry what a strict
verifier asks for (a CA's key usage, a leaf's key identifiers and its names as
subjectAltName), so they pass Python's checks today and stricter ones later.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
from pathlib import Path
from typing import AsyncIterator, NamedTuple, Optional, Sequence

from aiohttp import web
from yarl import URL

#: The names a gateway on this machine is reached by in the tests.
LOCAL_NAMES = ("127.0.0.1", "localhost")


class Pair(NamedTuple):
    """A certificate and its private key, PEM files."""

    cert: Path
    key: Path


def authority(folder: Path, name: str) -> Pair:
    """A self-signed CA named ``name``, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        ["req", "-x509", *_new_key(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"]
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    )
    return Pair(cert, key)


def gateway_cert(ca: Pair, folder: Path, name: str, hosts: Sequence[str] = LOCAL_NAMES) -> Pair:
    """A server certificate for ``hosts`` (IP addresses or DNS names) signed by ``ca``, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, request, extensions = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    _openssl(["req", "-new", *_new_key(key), "-out", str(request), "-subj", f"/CN={hosts[0]}"])
    names = ",".join(f"{'IP' if _is_address(host) else 'DNS'}:{host}" for host in hosts)
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        encoding="utf-8",
    )
    _openssl(
        ["x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial"]
        + ["-out", str(cert), "-days", "2", "-extfile", str(extensions)]
    )
    return Pair(cert, key)


def _new_key(key: Path) -> list:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host


def _openssl(args: list) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@contextlib.asynccontextmanager
async def serving(pages: web.Application, context: Optional[ssl.SSLContext]) -> AsyncIterator[URL]:
    """``pages`` served on a free port of 127.0.0.1, over https with ``context`` (plain http without); its URL."""
    runner = web.AppRunner(pages, access_log=None)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield URL(f"{'https' if context else 'http'}://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
