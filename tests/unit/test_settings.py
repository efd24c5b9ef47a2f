"""Safe defaults: the gateway listens on loopback only and writes are open only when no token is set."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Dict

import pytest

from app.errors import ConfigurationError
from app.settings import SETTINGS_PAGE, TABLE_BEGIN, TABLE_END, Secret, Settings, load, markdown_table, write_table
from tests.unit.conftest import Pem

PASSWORD = "correct horse battery staple"
SCRAM = {
    "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "UBS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "UBS_KAFKA_SASL_USERNAME": "ubscore",
    "UBS_KAFKA_SASL_PASSWORD": PASSWORD,
}


def test_gateway_binds_to_loopback_by_default() -> None:
    settings = load({})
    assert settings.web_host == "127.0.0.1"
    assert settings.api_token is None


def test_token_is_read_and_hidden_from_repr() -> None:
    settings = load({"UBS_API_TOKEN": "  abc  "})
    assert settings.api_token is not None and settings.api_token.reveal() == "abc"
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


def test_the_settings_page_table_is_the_generated_one() -> None:
    """Defaults and help live in app/settings.py alone; `python -m app.settings --write` updates docs/settings.md."""
    page = (Path(__file__).resolve().parents[2] / SETTINGS_PAGE).read_text(encoding="utf-8")
    table = page.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == markdown_table()


def test_write_replaces_only_the_table_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Head\n\n{TABLE_BEGIN}\n| old |\n{TABLE_END}\n\nTail\n", encoding="utf-8")
    write_table(str(page))
    assert page.read_text(encoding="utf-8") == f"# Head\n\n{TABLE_BEGIN}\n{markdown_table()}\n{TABLE_END}\n\nTail\n"


def test_every_setting_is_read_from_its_variable() -> None:
    for spec in fields(Settings):
        assert spec.metadata["env"] == f"UBS_{spec.name.upper()}" or spec.name == "kafka"


def test_a_secret_prints_masked_everywhere() -> None:
    secret = Secret(PASSWORD)
    assert secret.reveal() == PASSWORD
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):
        assert PASSWORD not in shown


def test_passwords_are_masked_in_the_settings_repr_and_str() -> None:
    settings = load({**SCRAM, "UBS_CQL_USERNAME": "ubscore", "UBS_CQL_PASSWORD": PASSWORD})
    assert settings.kafka_sasl_password == settings.cql_password == Secret(PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "kafka_sasl_password=Secret('***')" in repr(settings)


def test_a_password_may_come_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(f"{PASSWORD}\n", encoding="utf-8")
    env = {**SCRAM, "UBS_KAFKA_SASL_PASSWORD": "", "UBS_KAFKA_SASL_PASSWORD_FILE": str(path)}
    assert load(env).kafka_sasl_password == Secret(PASSWORD)
    cql = load({"UBS_CQL_USERNAME": "ubscore", "UBS_CQL_PASSWORD_FILE": str(path)})
    assert cql.cql_password == Secret(PASSWORD)


def test_a_password_given_twice_or_in_a_missing_file_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="UBS_CQL_PASSWORD and UBS_CQL_PASSWORD_FILE are both set") as twice:
        load({"UBS_CQL_USERNAME": "u", "UBS_CQL_PASSWORD": PASSWORD, "UBS_CQL_PASSWORD_FILE": "/run/secrets/cql"})
    assert PASSWORD not in str(twice.value)
    with pytest.raises(ConfigurationError, match="UBS_CQL_PASSWORD_FILE: cannot read /nonexistent/password"):
        load({"UBS_CQL_USERNAME": "u", "UBS_CQL_PASSWORD_FILE": "/nonexistent/password"})


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="UBS_CQL_PASSWORD_FILE: .* is empty"):
        load({"UBS_CQL_USERNAME": "u", "UBS_CQL_PASSWORD_FILE": str(tmp_path / "empty")})


def test_kafka_security_defaults_to_plaintext_and_cql_to_local_quorum_without_login() -> None:
    settings = load({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism is None and settings.kafka_sasl_password is None
    assert settings.cql_consistency == "LOCAL_QUORUM"
    assert settings.cql_username is None and settings.cql_ssl_cafile is None and settings.cql_local_dc is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UBS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "UBS_KAFKA_SECURITY_PROTOCOL must be one of"),
        ({**SCRAM, "UBS_KAFKA_SASL_MECHANISM": "GSSAPI"}, "UBS_KAFKA_SASL_MECHANISM must be one of"),
        ({"UBS_CQL_CONSISTENCY": "SERIAL"}, "UBS_CQL_CONSISTENCY must be one of"),
        ({"UBS_CQL_CONSISTENCY": ""}, "UBS_CQL_CONSISTENCY must not be empty"),
        ({**SCRAM, "UBS_KAFKA_SASL_MECHANISM": ""}, "UBS_KAFKA_SASL_MECHANISM must be set: .* is SASL_SSL"),
        ({**SCRAM, "UBS_KAFKA_SASL_USERNAME": ""}, "UBS_KAFKA_SASL_USERNAME must be set"),
        ({**SCRAM, "UBS_KAFKA_SASL_PASSWORD": ""}, "UBS_KAFKA_SASL_PASSWORD must be set"),
        ({"UBS_KAFKA_SASL_USERNAME": "u"}, "UBS_KAFKA_SASL_USERNAME is set but unused: .* PLAINTEXT"),
        ({"UBS_CQL_USERNAME": "u"}, "UBS_CQL_PASSWORD must be set: UBS_CQL_USERNAME is set"),
        ({"UBS_CQL_PASSWORD": "p"}, "UBS_CQL_USERNAME must be set: UBS_CQL_PASSWORD is set"),
        ({"UBS_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "UBS_KAFKA_SSL_CAFILE names no file"),
        ({"UBS_CQL_SSL_CAFILE": "/nonexistent/ca.pem"}, "UBS_CQL_SSL_CAFILE names no file"),
    ],
)
def test_bad_security_settings_are_refused_naming_the_setting(env: Dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load(env)


def test_tls_files_must_exist_come_in_pairs_and_go_with_a_protocol_that_uses_them(tmp_path: Path) -> None:
    pem = tmp_path / "any.pem"
    pem.write_text("-", encoding="utf-8")
    tls = {"UBS_KAFKA_SECURITY_PROTOCOL": "SSL"}
    with pytest.raises(ConfigurationError, match="UBS_KAFKA_SSL_KEYFILE must be set: UBS_KAFKA_SSL_CERTFILE is set"):
        load({**tls, "UBS_KAFKA_SSL_CERTFILE": str(pem)})
    with pytest.raises(ConfigurationError, match="UBS_KAFKA_SSL_CERTFILE must be set: UBS_KAFKA_SSL_KEYFILE is set"):
        load({**tls, "UBS_KAFKA_SSL_KEYFILE": str(pem)})
    with pytest.raises(ConfigurationError, match="UBS_KAFKA_SSL_CAFILE is set but unused: .* SASL_PLAINTEXT"):
        load({**SCRAM, "UBS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "UBS_KAFKA_SSL_CAFILE": str(pem)})
    with pytest.raises(ConfigurationError, match="UBS_CQL_SSL_KEYFILE must be set: UBS_CQL_SSL_CERTFILE is set"):
        load({"UBS_CQL_SSL_CAFILE": str(pem), "UBS_CQL_SSL_CERTFILE": str(pem)})
    with pytest.raises(ConfigurationError, match="UBS_CQL_SSL_CERTFILE is set but unused: UBS_CQL_SSL_CAFILE is unset"):
        load({"UBS_CQL_SSL_CERTFILE": str(pem), "UBS_CQL_SSL_KEYFILE": str(pem)})
    mutual = load(
        {**tls, "UBS_KAFKA_SSL_CAFILE": str(pem), "UBS_KAFKA_SSL_CERTFILE": str(pem), "UBS_KAFKA_SSL_KEYFILE": str(pem)}
    )
    assert (mutual.kafka_ssl_cafile, mutual.kafka_ssl_certfile, mutual.kafka_ssl_keyfile) == (str(pem),) * 3


def test_the_accepted_consistency_levels_are_driver_names_that_both_read_and_write() -> None:
    from cassandra import ConsistencyLevel

    from app.settings import CQL_CONSISTENCIES

    assert set(CQL_CONSISTENCIES) == set(ConsistencyLevel.name_to_value) - {"ANY", "SERIAL", "LOCAL_SERIAL"}


def test_a_gateway_certificate_makes_the_advertised_url_https_and_a_static_member_of_its_own(pem: Pem) -> None:
    served = {"UBS_WEB_TLS_CERTFILE": str(pem.cert), "UBS_WEB_TLS_KEYFILE": str(pem.key), "UBS_WEB_PORT": "7001"}
    plain, tls = load({"UBS_WEB_PORT": "7001"}), load(served)
    assert (plain.web_tls, plain.canonical_url) == (False, "http://127.0.0.1:7001")
    assert (tls.web_tls, tls.canonical_url) == (True, "https://127.0.0.1:7001")
    # Faust refuses an assignment made for another URL: the https worker joins as a member of its own.
    assert plain.group_instance_id("ledger") == "127.0.0.1-7001-ledger"
    assert tls.group_instance_id("ledger") == "https-127.0.0.1-7001-ledger"
    assert load({"UBS_WEB_TLS_CAFILE": str(pem.cert)}).canonical_url == "http://127.0.0.1:6066"  # a client's CA


def test_a_gateway_certificate_needs_its_key_files_must_exist_and_the_pool_a_floor(pem: Pem) -> None:
    with pytest.raises(ConfigurationError, match="UBS_WEB_TLS_KEYFILE must be set: UBS_WEB_TLS_CERTFILE is set"):
        load({"UBS_WEB_TLS_CERTFILE": str(pem.cert)})
    with pytest.raises(ConfigurationError, match="UBS_WEB_TLS_CERTFILE must be set: UBS_WEB_TLS_KEYFILE is set"):
        load({"UBS_WEB_TLS_KEYFILE": str(pem.key)})
    for name in ("UBS_WEB_TLS_CERTFILE", "UBS_WEB_TLS_KEYFILE", "UBS_WEB_TLS_CAFILE"):
        with pytest.raises(ConfigurationError, match=f"{name} names no file"):
            load({name: "/nonexistent/gateway.pem"})
    assert load({}).web_route_connections == 32
    with pytest.raises(ConfigurationError, match="UBS_WEB_ROUTE_CONNECTIONS must be at least 1"):
        load({"UBS_WEB_ROUTE_CONNECTIONS": "0"})
