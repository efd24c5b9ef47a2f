"""The keys in force (app.web.access): read at start, refused at start, kept through a bad reload, announced."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator, List

import pytest

from app.errors import ConfigurationError
from app.exit_codes import ExitCode
from app.observability.log_format import event_fields
from app.settings import load, settings
from app.web import access
from app.web.auth import digest
from tests.unit.conftest import Pem

SECRET = "the-secret-of-key-one"
TOKEN = "the-token-secret"


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    yield
    access.reload(settings)


def write_keys(path: Path, *ids: str) -> Path:
    entries = [{"id": key_id, "sha256": digest(f"{SECRET}-{key_id}"), "scopes": ["accounts:read"]} for key_id in ids]
    path.write_text(json.dumps({"keys": entries}))
    return path


def key_ids() -> List[str]:
    return [key.id for key in access.current().keys]


def test_a_bad_file_on_reload_keeps_the_keys_in_force_and_says_why_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_keys(tmp_path / "keys.json", "one")
    config = load({"UBS_API_KEYS_FILE": str(path)})
    access.start("127.0.0.1", config)
    assert key_ids() == ["one"]
    write_keys(path, "one", "two")
    access.reload(config)
    assert key_ids() == ["one", "two"]
    path.write_text(json.dumps({"keys": [{"id": "three", "sha256": SECRET, "scopes": ["operator"]}]}))
    caplog.clear()
    access.reload(config)
    assert key_ids() == ["one", "two"]
    (line,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert line.getMessage().startswith("api_keys_reload_failed kept=2 error=")
    assert str(path) in line.getMessage() and "sha256 must be 64 hex digits" in line.getMessage()
    assert SECRET not in caplog.text
    path.unlink()
    access.reload(config)
    assert key_ids() == ["one", "two"] and "cannot be read" in caplog.text


def test_a_bad_file_at_start_refuses_it_naming_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"id": "a", "sha256": "00", "scopes": ["operator"], "users": "all"}]}')
    with pytest.raises(ConfigurationError, match=rf"UBS_API_KEYS_FILE {path}: key 'a': sha256 must be"):
        access.start("127.0.0.1", load({"UBS_API_KEYS_FILE": str(path)}))
    with pytest.raises(ConfigurationError, match="cannot be read: No such file"):
        access.start("127.0.0.1", load({"UBS_API_KEYS_FILE": str(tmp_path / "missing.json")}))


def test_a_gateway_on_the_network_without_keys_refuses_to_start_unless_insecure() -> None:
    with pytest.raises(ConfigurationError, match="binds 0.0.0.0, not a loopback address, and no API key"):
        access.start("0.0.0.0", load({}))
    assert access.start("0.0.0.0", load({"UBS_INSECURE": "1"})).insecure
    assert not access.start("0.0.0.0", load({"UBS_API_TOKEN": TOKEN})).open
    with pytest.raises(ConfigurationError, match="UBS_INSECURE must be 0 or 1"):
        load({"UBS_INSECURE": "yes"})


@pytest.mark.parametrize(
    "bind, env, lines",
    [
        ("127.0.0.1", {}, ["gateway_open"]),
        ("0.0.0.0", {"UBS_INSECURE": "1"}, ["gateway_insecure", "gateway_plain_http"]),
        ("0.0.0.0", {"UBS_INSECURE": "1", "UBS_WEB_BEHIND_PROXY": "1"}, ["gateway_insecure"]),
        ("10.0.0.5", {"UBS_API_TOKEN": TOKEN}, ["api_keys_loaded", "gateway_plain_http"]),
        ("10.0.0.5", {"UBS_API_TOKEN": TOKEN, "UBS_WEB_BEHIND_PROXY": "1"}, ["api_keys_loaded"]),
    ],
)
def test_the_start_says_how_open_the_gateway_is_first(
    bind: str, env: dict, lines: List[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = load(env)
    access.announce(access.start(bind, config), config)
    assert [record.getMessage().split()[0] for record in caplog.records] == lines
    for record in caplog.records:
        assert event_fields(record.msg, record.args) is not None  # key=value, and JSON with UBS_LOG_FORMAT=json
    assert TOKEN not in caplog.text


def test_a_gateway_serving_tls_itself_serves_no_plain_http_and_says_where(
    pem: Pem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    env = {"UBS_API_TOKEN": TOKEN, "UBS_WEB_TLS_CERTFILE": str(pem.cert), "UBS_WEB_TLS_KEYFILE": str(pem.key)}
    config = load({**env, "UBS_ADVERTISED_HOST": "ledger-1.internal"})
    access.announce(access.start("10.0.0.5", config), config)
    assert [record.getMessage().split()[0] for record in caplog.records] == ["api_keys_loaded", "gateway_tls"]
    line = caplog.records[-1]
    assert event_fields(line.msg, line.args) == {
        "event": "gateway_tls",
        "url": "https://ledger-1.internal:6066",
        "certfile": str(pem.cert),
        "cafile": None,
    }
    assert pem.key.read_text(encoding="utf-8").splitlines()[1] not in caplog.text


def test_a_start_refused_is_one_line_and_exit_78(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as ended:
        with access.refusing_to_start():
            access.start("0.0.0.0", load({}))
    assert ended.value.code == ExitCode.BAD_CONFIGURATION == 78
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ubscore worker: refusing to start: the gateway binds 0.0.0.0")
