"""Fixtures of the unit tests that need files on disk."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest


class Pem(NamedTuple):
    """A self-signed certificate and its key: a CA file for a TLS client, or a client certificate."""

    cert: Path
    key: Path


@pytest.fixture(scope="session")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    """Made by openssl at each run, so no private key lives in the repository."""
    folder = tmp_path_factory.mktemp("pem")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=ubscore-test-ca"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Pem(cert, key)
