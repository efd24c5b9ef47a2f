"""A worker that must not serve as configured refuses to start: one line, exit 78, before it binds or connects.

Each worker here is pointed at closed ports: should one start after all, it
reaches no broker and no database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from app.exit_codes import ExitCode

REPO = Path(__file__).resolve().parents[2]
NOWHERE = {"UBS_KAFKA": "kafka://127.0.0.1:9", "UBS_CQL_PORT": "9", "UBS_WEB_PORT": "9"}
#: A file that exists and is no PEM: a certificate, key or CA file that cannot serve.
README = str(REPO / "README.md")
NOT_PEM = {"UBS_WEB_TLS_CERTFILE": README, "UBS_WEB_TLS_KEYFILE": README}


def worker(tmp_path: Path, env: Dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", "worker", "-l", "info", *flags],
        cwd=REPO,
        env={**os.environ, **NOWHERE, "UBS_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, flags, says",
    [
        ({"UBS_WEB_HOST": "0.0.0.0"}, [], "the gateway binds 0.0.0.0, not a loopback address, and no API key"),
        ({}, ["--web-bind", "10.1.2.3"], "the gateway binds 10.1.2.3, not a loopback address"),
        ({"UBS_API_KEYS_FILE": "/nonexistent/keys.json"}, [], "UBS_API_KEYS_FILE /nonexistent/keys.json: cannot be"),
        ({"UBS_ROLE": "sink", "UBS_WEB_HOST": "0.0.0.0"}, [], "the gateway binds 0.0.0.0"),  # its /metrics
        ({"UBS_WEB_TLS_CERTFILE": README}, [], "UBS_WEB_TLS_KEYFILE must be set: UBS_WEB_TLS_CERTFILE is set"),
        ({"UBS_WEB_TLS_KEYFILE": README}, [], "UBS_WEB_TLS_CERTFILE must be set: UBS_WEB_TLS_KEYFILE is set"),
        (NOT_PEM, [], f"UBS_WEB_TLS_CERTFILE {README} with UBS_WEB_TLS_KEYFILE {README}: cannot serve TLS: a file"),
        ({"UBS_ROLE": "sink", **NOT_PEM}, [], "cannot serve TLS"),  # the sink's /metrics serve with them too
        ({"UBS_WEB_TLS_CAFILE": README}, [], f"UBS_WEB_TLS_CAFILE {README}: no CA in it"),
    ],
)
def test_a_worker_refuses_to_start_in_one_line_with_exit_78(
    tmp_path: Path, env: Dict[str, str], flags: List[str], says: str
) -> None:
    done = worker(tmp_path, env, *flags)
    assert done.returncode == ExitCode.BAD_CONFIGURATION == 78, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ubscore worker: refusing to start: ") and says in line
    assert not (tmp_path / "data").exists()  # nothing started: no table opened
