"""The fault suite's network cut (tests/integration/netcut.py) with real sockets, no Kafka.

An echo server stands for a broker; the proxy runs in its own process, as in the fault suite.
Everything listens on ports the system chooses, so the tests never meet a running stack.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.netcut import BrokerProxies, CutProxy, NetCutError, parse_routes

SILENCE_S = 0.5  # how long "no answer" is waited for
ANSWER_S = 5.0  # how long an answer may take


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            with server.lock:
                server.received += len(data)
            try:
                self.request.sendall(data)
            except OSError:
                return


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.connections = 0
        self.received = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[CutProxy]:
    with CutProxy(echo.address, name="test") as started:
        yield started


def connect(proxy: CutProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port or 0), timeout=ANSWER_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.settimeout(ANSWER_S)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def assert_silent(sock: socket.socket) -> None:
    """A request gets no answer, and the connection is neither closed nor reset."""
    sock.sendall(b"anyone there?")
    sock.settimeout(SILENCE_S)
    with pytest.raises(TimeoutError):
        sock.recv(100)


def assert_dead(sock: socket.socket) -> None:
    """The connection was reset (or closed): a read ends at once, a write soon fails."""
    sock.settimeout(ANSWER_S)
    with pytest.raises(OSError):
        data = sock.recv(100)
        if data == b"":  # a FIN: the next write is answered with a reset
            sock.sendall(b"x")
            time.sleep(0.1)
            sock.sendall(b"x")


def wait_for(condition: object, timeout: float = ANSWER_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_bytes_flow_both_ways(proxy: CutProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello") == b"hello"
        big = os.urandom(3 * 1024 * 1024)
        assert round_trip(sock, big) == big
    stats = proxy.stats()
    assert stats["state"] == "open" and stats["forwarded"] == 1
    assert echo.connections == 1


def test_blackhole_holds_connections_silent_and_heal_resets_them(proxy: CutProxy, echo: EchoServer) -> None:
    old = connect(proxy)
    assert round_trip(old, b"before") == b"before"
    received = echo.received

    result = proxy.cut("blackhole")
    assert result["affected"] == 1 and result["state"] == "blackhole"
    assert_silent(old)
    assert_silent(old)  # still open: silent again, not closed
    # A new connection is accepted but never forwarded.
    new = connect(proxy)
    assert_silent(new)
    time.sleep(0.1)
    assert echo.received == received, "bytes reached the server through a blackhole"
    assert echo.connections == 1, "a connection reached the server through a blackhole"
    stats = proxy.stats()
    assert stats["connections"] == 2 and stats["blackholed"] == 2 and stats["held_bytes"] > 0

    result = proxy.heal()
    assert result["affected"] == 2 and result["state"] == "open"
    assert_dead(old)
    assert_dead(new)
    with connect(proxy) as fresh:
        assert round_trip(fresh, b"after") == b"after"
    old.close()
    new.close()


def test_blackhole_stops_reading_past_its_limit(proxy: CutProxy) -> None:
    """A sender that goes on writing into a blackhole fills its buffers and blocks, as with no ACKs."""
    with connect(proxy) as sock:
        proxy.cut()
        sock.settimeout(SILENCE_S * 4)
        sent = 0
        chunk = b"x" * 65536
        with pytest.raises(TimeoutError):
            while sent < 64 * 1024 * 1024:
                sent += sock.send(chunk)
        assert 4 * 1024 * 1024 < sent < 64 * 1024 * 1024
        proxy.heal()


def test_a_client_that_gives_up_during_a_blackhole_is_released(proxy: CutProxy) -> None:
    proxy.cut()
    for _ in range(20):
        with connect(proxy) as sock:
            sock.sendall(b"hello?")
    wait_for(lambda: proxy.stats()["connections"] == 0)
    proxy.heal()


def test_reset_mode_resets_open_connections_and_refuses_new_ones(proxy: CutProxy, echo: EchoServer) -> None:
    old = connect(proxy)
    assert round_trip(old, b"before") == b"before"
    result = proxy.cut("reset")
    assert result["affected"] == 1 and result["connections"] == 0
    with pytest.raises(ConnectionResetError):
        old.settimeout(ANSWER_S)
        old.recv(100)
    old.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port or 0), timeout=ANSWER_S)
    proxy.heal()
    with connect(proxy) as fresh:
        assert round_trip(fresh, b"after") == b"after"


def test_switching_modes_and_repeated_cuts(proxy: CutProxy) -> None:
    proxy.cut("reset")
    proxy.cut("blackhole")  # listening again, but silent
    with connect(proxy) as sock:
        assert_silent(sock)
        proxy.cut("blackhole")
        proxy.cut("reset")
        assert_dead(sock)
    proxy.heal()
    proxy.heal()
    with connect(proxy) as sock:
        assert round_trip(sock, b"ok") == b"ok"


def test_many_connections(proxy: CutProxy, echo: EchoServer) -> None:
    socks = [connect(proxy) for _ in range(100)]
    try:
        for n, sock in enumerate(socks):
            assert round_trip(sock, b"ping %d" % n) == b"ping %d" % n
        assert proxy.stats()["connections"] == 100
        assert proxy.cut()["affected"] == 100
        received = echo.received
        for sock in socks:
            sock.sendall(b"lost")
        readable, _, _ = select.select(socks, [], [], SILENCE_S)
        assert readable == [], "a blackholed connection answered or was closed"
        assert echo.received == received
        assert proxy.heal()["affected"] == 100
        for sock in socks:
            assert_dead(sock)
    finally:
        for sock in socks:
            sock.close()
    assert proxy.stats()["connections"] == 0


def test_unreachable_target_resets_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with CutProxy(f"127.0.0.1:{port}") as proxy:
        # The reset may come so soon that connect() itself reports it.
        with pytest.raises(OSError):
            with connect(proxy) as sock:
                sock.settimeout(ANSWER_S)
                if sock.recv(100) == b"":
                    raise AssertionError("closed with a FIN, not reset")


def test_shutdown_is_clean(echo: EchoServer) -> None:
    proxy = CutProxy(echo.address).start()
    port = proxy.port
    sock = connect(proxy)
    assert round_trip(sock, b"hi") == b"hi"
    proxy.close()
    assert proxy.exit_code == 0
    assert sock.recv(100) == b""  # closed with a FIN
    sock.close()
    with socket.socket() as again:  # the port is free
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port or 0))
    proxy.close()  # idempotent
    with pytest.raises(NetCutError):
        proxy.cut()


def test_a_cut_proxy_shuts_down_cleanly_too(echo: EchoServer) -> None:
    with CutProxy(echo.address) as proxy:
        sock = connect(proxy)
        proxy.cut()
        assert_silent(sock)
    assert proxy.exit_code == 0
    sock.close()


def test_the_proxy_stops_when_its_controller_goes_away(echo: EchoServer) -> None:
    """The process exits when the pipe closes, as when the test that started it dies."""
    import subprocess
    import sys

    from tests.integration import netcut

    proc = subprocess.Popen(
        [sys.executable, "-I", netcut.__file__, "--listen", "127.0.0.1:0", "--target", echo.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert b'"ready": true' in proc.stdout.readline()
    proc.stdin.close()
    assert proc.wait(timeout=ANSWER_S) == 0
    proc.stdout.close()


def test_a_taken_port_fails_the_start(proxy: CutProxy, echo: EchoServer) -> None:
    with pytest.raises(NetCutError, match="cannot listen"):
        CutProxy(echo.address, listen=proxy.address).start()


def test_bad_modes_and_addresses(proxy: CutProxy) -> None:
    with pytest.raises(ValueError):
        proxy.cut("drop")
    with pytest.raises(ValueError):
        CutProxy("localhost")


def test_cuts_and_heals_are_logged(proxy: CutProxy, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="netcut"):
        proxy.cut("blackhole")
        proxy.heal()
    lines = [r.getMessage() for r in caplog.records if r.name == "netcut"]
    assert len(lines) == 2
    assert "cut (blackhole)" in lines[0] and "healed after" in lines[1]


def test_routes_from_the_stack_command() -> None:
    text = "127.0.0.1:29092 127.0.0.1:29093\n127.0.0.1:29094 127.0.0.1:29095\n"
    assert parse_routes(text) == [("127.0.0.1:29092", "127.0.0.1:29093"), ("127.0.0.1:29094", "127.0.0.1:29095")]
    with pytest.raises(ValueError):
        parse_routes("")


def test_broker_proxies_cut_one_broker_of_several() -> None:
    servers = [EchoServer() for _ in range(3)]
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        with BrokerProxies([("127.0.0.1:0", s.address) for s in servers]) as proxies:
            assert proxies.bootstrap.count(",") == 2
            assert proxies.kafka_url.startswith("kafka://127.0.0.1:") and proxies.kafka_url.count(";") == 2
            socks = [connect(p) for p in proxies.proxies]
            proxies.cut("blackhole", brokers=[2])
            assert round_trip(socks[0], b"one") == b"one"
            assert_silent(socks[1])
            assert round_trip(socks[2], b"three") == b"three"
            with pytest.raises(ValueError):
                proxies.cut(brokers=[4])
            proxies.heal()
            assert_dead(socks[1])
            with connect(proxies.proxies[1]) as sock:
                assert round_trip(sock, b"two") == b"two"
            for sock in socks:
                sock.close()
        assert all(p.exit_code == 0 for p in proxies.proxies)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
