"""The gateway's TLS (app.web.tls) and its calls to other workers (app.web.peers), against real https servers.

Two throwaway CAs: the gateways' own, whose CA file the clients are given, and
another, which signs a certificate for the same names that must be refused.
"""

from __future__ import annotations

import ast
import ssl
import subprocess
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator, NamedTuple, Optional

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from app.errors import ConfigurationError
from app.settings import Settings, load
from app.web import peers, tls
from tests.tls_files import Pair, authority, gateway_cert, serving

ROOT = Path(__file__).resolve().parents[2]


class Files(NamedTuple):
    """The gateways' CA and a gateway's certificate; another CA, and a certificate it signed for the same names."""

    ca: Pair
    gateway: Pair
    other_ca: Pair
    impostor: Pair


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("tls")
    ca, other_ca = authority(folder, "gateways-ca"), authority(folder, "other-ca")
    return Files(ca, gateway_cert(ca, folder, "gateway"), other_ca, gateway_cert(other_ca, folder, "impostor"))


def env_of(pair: Pair) -> Dict[str, str]:
    return {"UBS_WEB_TLS_CERTFILE": str(pair.cert), "UBS_WEB_TLS_KEYFILE": str(pair.key)}


def served_by(pair: Pair) -> Settings:
    return load(env_of(pair))


def trusting(ca: Path) -> Settings:
    return load({"UBS_WEB_TLS_CAFILE": str(ca)})


# --- the contexts ---------------------------------------------------------------------------------------


def test_a_ca_file_alone_is_for_clients(files: Files) -> None:
    """``ubscore`` on an operator's machine trusts the gateways' CA without serving anything."""
    config = trusting(files.ca.cert)
    assert not config.web_tls and tls.server_context(config) is None
    assert config.canonical_url.startswith("http://")


def test_the_server_context_serves_the_certificate_from_tls_1_2_on(files: Files) -> None:
    context = tls.server_context(served_by(files.gateway))
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # clients prove themselves with API keys, not certificates


def test_the_client_context_checks_the_certificate_and_the_host_name_against_the_ca_file(files: Files) -> None:
    context = tls.client_context(trusting(files.ca.cert))
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    trusted = [dict(pair[0] for pair in ca["subject"]) for ca in context.get_ca_certs()]
    assert trusted == [{"commonName": "gateways-ca"}]


def test_files_that_cannot_serve_stop_the_start_naming_them_never_showing_the_key(files: Files, tmp_path: Path) -> None:
    key = files.gateway.key.read_text(encoding="utf-8")
    body = "".join(key.splitlines()[1:-1])
    encrypted = tmp_path / "encrypted.key"
    encrypt = ["openssl", "pkey", "-in", str(files.gateway.key), "-aes256", "-passout", "pass:p", "-out"]
    subprocess.run([*encrypt, str(encrypted)], check=True, capture_output=True, timeout=30)
    cases = [
        (files.gateway.cert, files.impostor.key, "KEY_VALUES_MISMATCH"),  # another certificate's key
        (files.gateway.cert, files.gateway.cert, "a file is not PEM, or the key file holds no private key"),
        (files.gateway.cert, encrypted, "the key is encrypted"),
    ]
    for cert, wrong, reason in cases:
        with pytest.raises(ConfigurationError) as refused:
            tls.server_context(load({"UBS_WEB_TLS_CERTFILE": str(cert), "UBS_WEB_TLS_KEYFILE": str(wrong)}))
        message = str(refused.value)
        assert message.startswith(f"UBS_WEB_TLS_CERTFILE {cert} with UBS_WEB_TLS_KEYFILE {wrong}: "), message
        assert reason in message and "_ssl.c" not in message
        assert body[:40] not in message and "PRIVATE KEY" not in message
    with pytest.raises(ConfigurationError, match=f"UBS_WEB_TLS_CAFILE {files.gateway.key}: no CA in it"):
        tls.client_context(trusting(files.gateway.key))


# --- a real https server, and the clients that call it ----------------------------------------------------


async def serve(context: Optional[ssl.SSLContext]) -> AsyncIterator[URL]:
    """A server on 127.0.0.1 that answers every path with the path it was asked."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs})

    pages = web.Application()
    pages.router.add_route("*", "/{tail:.*}", answer)
    async with serving(pages, context) as url:
        yield url


@pytest.fixture()
async def gateway(files: Files) -> AsyncIterator[URL]:
    """A server with the gateways' certificate, as a worker with UBS_WEB_TLS_CERTFILE serves."""
    async for url in serve(tls.server_context(served_by(files.gateway))):
        yield url


@pytest.fixture()
async def impostor(files: Files) -> AsyncIterator[URL]:
    """A server for the same names, with a certificate from another CA."""
    async for url in serve(tls.server_context(served_by(files.impostor))):
        yield url


@pytest.fixture()
async def plain() -> AsyncIterator[URL]:
    async for url in serve(None):
        yield url


async def get(session: aiohttp.ClientSession, url: URL) -> int:
    async with session.get(url) as response:
        return response.status


async def test_a_client_trusting_the_ca_file_reaches_the_gateway(files: Files, gateway: URL) -> None:
    async with tls.client_session(trusting(files.ca.cert)) as session:
        assert await get(session, gateway / "health") == 200
        assert await get(session, gateway.with_host("localhost") / "health") == 200  # the other name it carries


async def test_a_gateway_certificate_from_another_ca_is_refused(files: Files, impostor: URL) -> None:
    async with tls.client_session(trusting(files.ca.cert)) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
            await get(session, impostor / "health")
    assert tls.describe(refused.value).startswith("TLS: its certificate was refused: unable to get local issuer")


async def test_without_a_ca_file_the_systems_cas_do_not_vouch_for_a_private_ca(gateway: URL) -> None:
    async with tls.client_session(load({})) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(session, gateway / "health")


async def test_a_name_the_certificate_does_not_carry_is_refused(files: Files, tmp_path: Path) -> None:
    elsewhere = gateway_cert(files.ca, tmp_path, "elsewhere", hosts=("ledger-9.internal",))
    async for url in serve(tls.server_context(served_by(elsewhere))):
        async with tls.client_session(trusting(files.ca.cert)) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
                await get(session, url / "health")
        assert "IP address mismatch" in tls.describe(refused.value)


async def test_plain_http_to_the_tls_port_gets_no_answer(gateway: URL) -> None:
    async with tls.client_session(load({})) as session:
        with pytest.raises(aiohttp.ClientError):
            await get(session, gateway.with_scheme("http") / "health")


async def test_https_to_a_plain_server_fails_its_handshake(files: Files, plain: URL) -> None:
    async with tls.client_session(trusting(files.ca.cert)) as session:
        with pytest.raises(aiohttp.ClientError) as failed:
            await get(session, plain.with_scheme("https") / "health")
    assert tls.describe(failed.value).startswith("TLS: ")


# --- the gateway's session to the other workers -------------------------------------------------------------


@pytest.fixture()
async def fresh_peers() -> AsyncIterator[None]:
    await peers.close()
    yield
    await peers.close()


async def test_the_peer_session_is_one_bounded_pool_checked_against_the_ca_file(
    files: Files, gateway: URL, impostor: URL, fresh_peers: None
) -> None:
    env = {**env_of(files.gateway), "UBS_WEB_TLS_CAFILE": str(files.ca.cert), "UBS_PARTITIONS": "8"}
    config = load({**env, "UBS_WEB_ROUTE_CONNECTIONS": "3"})
    session = peers.session(config)
    assert peers.session(config) is session  # one session for every call
    connector = session.connector
    assert connector is not None and (connector.limit_per_host, connector.limit) == (3, 3 * 8)
    assert session.timeout.connect == peers.CONNECT_TIMEOUT_S
    assert await get(session, gateway / "accounts" / "1") == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(session, impostor / "accounts" / "1")
    await peers.close()
    assert session.closed and peers.session(config) is not session  # a stopped gateway's session is not reused


def test_a_call_goes_to_the_owner_by_its_own_scheme_keeping_path_and_query(files: Files) -> None:
    asked = URL("http://10.0.0.1:6066/accounts/7/holds?limit=5&after=h-1")
    owner = URL("https://ledger-2.internal:7001")
    for config in (load({}), served_by(files.gateway)):
        assert str(peers.at_owner(owner, asked, config)) == f"{owner}/accounts/7/holds?limit=5&after=h-1"
    assert str(peers.at_owner(URL("http://ledger-2.internal:7001"), asked, load({}))).startswith("http://ledger-2")


def test_a_gateway_serving_https_never_calls_an_owner_over_plain_http(files: Files) -> None:
    """The client's Authorization header goes with the call: it must not cross in the clear."""
    with pytest.raises(peers.PlainOwner, match="advertises plain http while this worker serves https"):
        peers.at_owner(URL("http://ledger-2.internal:7001"), URL("https://x:1/accounts/7"), served_by(files.gateway))
    assert issubclass(peers.PlainOwner, aiohttp.ClientError)  # every caller handles it as an unreachable owner


# --- one way to make an HTTP client ----------------------------------------------------------------------


def session_calls(source: str) -> int:
    """Calls of ``ClientSession(...)`` under any spelling (``aiohttp.ClientSession``, an imported name)."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            count += called == "ClientSession"
    return count


def app_sources() -> Iterator[Path]:
    yield from (path for path in sorted((ROOT / "app").rglob("*.py")) if path != ROOT / "app" / "web" / "tls.py")


def test_no_http_client_of_a_gateway_is_made_outside_app_web_tls() -> None:
    """A session made elsewhere would call an https gateway without the CA file, and fail in production only."""
    made = {str(path.relative_to(ROOT)): session_calls(path.read_text()) for path in app_sources()}
    assert {path: count for path, count in made.items() if count} == {}
    assert session_calls("import aiohttp as h\nh.ClientSession()") == 1  # the check sees what it looks for
    assert session_calls("from aiohttp import ClientSession\nClientSession(timeout=None)") == 1
