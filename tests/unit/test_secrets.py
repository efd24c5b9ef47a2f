"""No password, token or private key shows in the settings' repr, nor in anything a worker logs as it starts.

UBSCore logs no dump of its settings; what a starting worker prints is Faust's
banner, the clients' connection attempts and their errors. The worker here runs
for real with every secret set, against a Kafka and a database that refuse
connections (port 1), at debug level, until its first retry of the topic
creation shows that its Kafka clients were built and failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

from app.settings import load
from tests.tls_files import authority, gateway_cert

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-that-must-not-leak"
#: A line the worker logs once its Kafka clients were built and the first connection failed.
STARTED = "topics_not_ready"


def secrets_env(folder: Path) -> Dict[str, str]:
    password_file = folder / "kafka-password"
    password_file.write_text(f"{SECRET}\n", encoding="utf-8")
    gateway = gateway_cert(authority(folder, "ca"), folder, "gateway")
    return {
        "UBS_WEB_TLS_CERTFILE": str(gateway.cert),
        "UBS_WEB_TLS_KEYFILE": str(gateway.key),
        "UBS_KAFKA": "kafka://127.0.0.1:1",
        "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "UBS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "UBS_KAFKA_SASL_USERNAME": "ubscore",
        "UBS_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "UBS_CQL_PORT": "1",
        "UBS_CQL_USERNAME": "ubscore",
        "UBS_CQL_PASSWORD": SECRET,
        "UBS_API_TOKEN": SECRET,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_settings_show_no_secret(tmp_path: Path) -> None:
    settings = load(secrets_env(tmp_path))
    assert settings.kafka_sasl_password is not None and settings.kafka_sasl_password.reveal() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_a_starting_worker_logs_no_secret(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("UBS_")}
    env.update(secrets_env(tmp_path))
    env.update(
        {
            "UBS_STORE": "memory://",
            "UBS_DATA_DIR": str(tmp_path / "data"),
            "UBS_WEB_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "debug"], cwd=ROOT, env=env, stdout=output, stderr=output
        )
        try:
            deadline = time.monotonic() + 60
            while STARTED not in log.read_text(errors="replace") and worker.poll() is None:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    text = log.read_text(errors="replace")
    assert STARTED in text and "transport" in text  # it got as far as Faust's banner and its Kafka clients
    assert SECRET not in text
    assert "gateway_tls url=https://" in text  # it loaded the gateway's key, and shows only the files' names
    key = Path(env["UBS_WEB_TLS_KEYFILE"]).read_text(encoding="utf-8").splitlines()
    assert not any(line in text for line in key[1:-1]) and "PRIVATE KEY" not in text
