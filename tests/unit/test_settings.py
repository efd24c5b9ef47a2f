"""Safe defaults: the gateway listens on loopback only and writes are open only when no token is set."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.settings import README_BEGIN, README_END, Settings, load, markdown_table


def test_gateway_binds_to_loopback_by_default() -> None:
    settings = load({})
    assert settings.web_host == "127.0.0.1"
    assert settings.api_token is None


def test_token_is_read_and_hidden_from_repr() -> None:
    settings = load({"UBS_API_TOKEN": "  abc  "})
    assert settings.api_token == "abc"
    assert "abc" not in repr(settings)


def test_the_commands_present_ubs_api_key_else_the_token() -> None:
    both = load({"UBS_API_KEY": "key-secret", "UBS_API_TOKEN": "token-secret", "UBS_API_KEYS_FILE": "/etc/keys"})
    assert both.client_secret == "key-secret" and load({"UBS_API_TOKEN": "t"}).client_secret == "t"
    assert load({}).client_secret is None and load({}).api_keys_file is None
    assert "key-secret" not in repr(both) and "token-secret" not in repr(both)


def test_body_limit_has_a_floor() -> None:
    with pytest.raises(ConfigurationError, match="UBS_MAX_BODY_BYTES"):
        load({"UBS_MAX_BODY_BYTES": "10"})


def test_freeze_limit_is_half_the_session_timeout() -> None:
    assert load({"UBS_SESSION_TIMEOUT_S": "10"}).freeze_limit_s == 5.0


def test_stall_watch_looks_four_times_per_period_and_at_least_every_five_seconds() -> None:
    assert load({}).stall_s == 30.0
    assert load({}).stall_check_s == 5.0
    assert load({"UBS_STALL_S": "8"}).stall_check_s == 2.0
    with pytest.raises(ConfigurationError, match="UBS_STALL_S"):
        load({"UBS_STALL_S": "0"})


def test_exactly_once_is_refused_with_the_reason() -> None:
    # Faust's transactions would cover none of the checkpoint's own writes.
    with pytest.raises(ConfigurationError, match="exactly_once is not supported"):
        load({"UBS_PROCESSING_GUARANTEE": "exactly_once"})
    assert load({}).processing_guarantee == "at_least_once"


def test_a_static_member_is_named_by_its_advertised_address_in_kafka_s_characters() -> None:
    worker = load({"UBS_ADVERTISED_HOST": "ledger-3.example", "UBS_WEB_PORT": "7001"})
    assert worker.group_membership == "static"
    assert worker.group_instance_id("ledger") == "ledger-3.example-7001-ledger"
    assert load({"UBS_ADVERTISED_HOST": "::1"}).group_instance_id("sink") == "__1-6066-sink"
    assert load({"UBS_GROUP_MEMBERSHIP": "dynamic"}).group_instance_id("ledger") is None
    assert load({"UBS_ROLE": "sink"}).group_instance_id("sink") is None  # serves no URL to be named by
    with pytest.raises(ConfigurationError, match="UBS_GROUP_MEMBERSHIP"):
        load({"UBS_GROUP_MEMBERSHIP": "sticky"})


def test_readme_settings_table_is_the_generated_one() -> None:
    """Defaults and help live in app/settings.py alone; `python -m app.settings --write README.md` updates it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert table == markdown_table()


def test_every_setting_is_read_from_its_variable() -> None:
    for spec in fields(Settings):
        assert spec.metadata["env"] == f"UBS_{spec.name.upper()}" or spec.name == "kafka"
