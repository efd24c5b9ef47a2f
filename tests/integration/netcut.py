"""netcut: cut one process off the Kafka brokers, without root privileges or iptables.

A partial network partition, as the fault-injection suite needs it (issue 31): one worker can no
longer reach the brokers, while clients still reach it over HTTP and the other workers still reach
Kafka. The worker under test bootstraps from TCP proxies, one per broker, that nothing else uses;
cutting the proxies cuts that worker alone.

It works because each broker of the plain stack has a second listener, PROXIED, advertised at its
proxy's address (stack/kafka/server.properties.in): Kafka answers metadata with the addresses of
the listener a client connected on, so a client that bootstraps from the proxies
(`stack/bin/stack proxied-bootstrap`) only ever learns the proxies' addresses, for every broker,
the group and transaction coordinators included. `stack/bin/stack proxies` prints, per broker, the
address a proxy must listen on and the PROXIED listener it forwards to; `BrokerProxies.from_stack()`
starts them.

Each proxy runs in a process of its own (this file, run as a script) and is driven over a pipe, so
that neither the test's event loop nor its blocking calls stall the forwarding; the process exits
when the pipe closes, so a test that dies does not leave proxies behind. Cut modes:

- ``blackhole``: a dropped-packets partition. Open connections stay open but nothing is forwarded
  either way (what is read is held back, never delivered; past 4 MiB per connection reading
  stops, so the sender's buffers fill); new connections are accepted and never forwarded. The
  client sees silence and runs into its own timeouts. On heal the blackholed connections are
  reset (as a partition's TCP connections usually die) and new ones are forwarded again.
- ``reset``: every connection is reset (RST) and new ones are refused (the proxy stops listening)
  until the heal: what a REJECT with tcp-reset looks like.

It does not simulate TCP itself going silent: the proxy's kernel still accepts connections and
acknowledges bytes during a blackhole, so a client's connect() succeeds and only its requests time
out (a real drop leaves connect() hanging, and TCP retransmissions eventually fail the socket).
Kafka clients act on request and session timeouts, which behave the same either way.

Each cut and heal is logged (logger ``netcut``, INFO) as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("netcut")

MODES = ("blackhole", "reset")
REPO = Path(__file__).resolve().parents[2]
CHUNK = 65536
# Bytes read and held back per blackholed connection before the proxy stops reading from it.
HOLD_LIMIT = 4 * 1024 * 1024
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 10.0


class NetCutError(RuntimeError):
    """The proxy process failed, refused a command or did not answer in time."""


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


# ---------------------------------------------------------------- the proxy process


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes a connection with a RST rather than a FIN (SO_LINGER 0), dropping what is unsent."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Conn:
    """One client connection and, once it is forwarded, its connection to the target."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.client_gone = False
        self.closed = False
        self.held = 0
        self.eofs = 0
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()


class _Forwarder:
    """The proxy itself, on the proxy process's event loop."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen_host, self.listen_port = listen
        self.target_host, self.target_port = target
        self.state = "open"
        self.server: asyncio.Server | None = None
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.forwarded = 0

    async def open_listener(self) -> None:
        self.server = await asyncio.start_server(
            self._accept, self.listen_host, self.listen_port, reuse_address=True, backlog=512
        )
        # Port 0 (tests): keep the port the system chose, so that a heal listens there again.
        self.listen_port = self.server.sockets[0].getsockname()[1]

    def close_listener(self) -> None:
        # Closes the listening socket at once; connections still in its backlog are reset.
        if self.server is not None:
            self.server.close()
            self.server = None

    def _spawn(self, conn: _Conn, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        self.conns.add(conn)
        self.accepted += 1
        if self.state == "reset":  # accepted just before the listener closed
            self._close(conn, reset=True)
            return
        if self.state == "blackhole":
            conn.blackholed = True
            self._spawn(conn, self._pump(conn, reader, None, from_client=True))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), UPSTREAM_CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError):
            self._close(conn, reset=True)  # the target is down: the client sees its connection reset
            return
        if conn.closed:  # reset by a cut while connecting
            _reset(up_writer)
            return
        conn.upstream_writer = up_writer
        self.forwarded += 1
        self._spawn(conn, self._pump(conn, reader, up_writer, from_client=True))
        self._spawn(conn, self._pump(conn, up_reader, writer, from_client=False))

    async def _pump(
        self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, from_client: bool
    ) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if conn.blackholed:
                    # Nothing is delivered, not even an end of stream: held until the heal closes it.
                    if not data:
                        if from_client:
                            self._release_client(conn)
                        return
                    conn.held += len(data)
                    if conn.held > HOLD_LIMIT:
                        await conn.done.wait()
                        return
                    continue
                assert dst is not None
                if not data:
                    if dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    conn.eofs += 1
                    if conn.eofs == 2:
                        self._close(conn, reset=False)
                    return
                dst.write(data)
                await dst.drain()
        except OSError:  # ConnectionResetError, BrokenPipeError...
            if conn.blackholed and from_client:
                self._release_client(conn)
            elif not conn.blackholed:
                self._close(conn, reset=True)  # pass the reset on to the other side

    def _release_client(self, conn: _Conn) -> None:
        """The client of a blackholed connection gave up: free its socket, tell the target nothing."""
        conn.client_gone = True
        conn.client_writer.transport.abort()
        if conn.upstream_writer is None:
            self._close(conn, reset=True)

    def _close(self, conn: _Conn, reset: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.done.set()
        self.conns.discard(conn)
        for writer in (conn.client_writer, conn.upstream_writer):
            if writer is None:
                continue
            if reset:
                _reset(writer)
            else:
                writer.close()
        current = asyncio.current_task()
        for task in list(conn.tasks):
            if task is not current:
                task.cancel()

    async def cut(self, mode: str) -> dict[str, Any]:
        if mode not in MODES:
            raise ValueError(f"unknown cut mode {mode!r} (one of {', '.join(MODES)})")
        affected = len(self.conns)
        self.state = mode
        if mode == "blackhole":
            for conn in self.conns:
                conn.blackholed = True
            if self.server is None:  # from a reset cut
                await self.open_listener()
        else:
            self.close_listener()
            for conn in list(self.conns):
                self._close(conn, reset=True)
        return {**self.stats(), "affected": affected}

    async def heal(self) -> dict[str, Any]:
        self.state = "open"
        closed = 0
        for conn in list(self.conns):
            if conn.blackholed:
                self._close(conn, reset=True)
                closed += 1
        if self.server is None:
            await self.open_listener()
        return {**self.stats(), "affected": closed}

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "port": self.listen_port,
            "connections": len(self.conns),
            "blackholed": sum(1 for conn in self.conns if conn.blackholed),
            "held_bytes": sum(conn.held for conn in self.conns),
            "accepted": self.accepted,
            "forwarded": self.forwarded,
        }

    async def shutdown(self) -> None:
        self.close_listener()
        writers = [w for conn in self.conns for w in (conn.client_writer, conn.upstream_writer) if w is not None]
        for conn in list(self.conns):
            self._close(conn, reset=False)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True), timeout=2.0
            )


def _reply(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    forwarder = _Forwarder(listen, target)
    try:
        await forwarder.open_listener()
    except OSError as exc:
        _reply({"ok": False, "error": f"cannot listen on {listen[0]}:{listen[1]}: {exc}"})
        return
    _reply({"ok": True, "ready": True, **forwarder.stats()})
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    while True:
        line = await control.readline()
        if not line:  # the controlling process is gone (or closed the pipe): stop
            break
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "stop":
                break
            if op == "cut":
                result = await forwarder.cut(str(request.get("mode", "blackhole")))
            elif op == "heal":
                result = await forwarder.heal()
            elif op == "stats":
                result = forwarder.stats()
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, OSError) as exc:
            _reply({"ok": False, "error": str(exc)})
            continue
        _reply({"ok": True, **result})
    await forwarder.shutdown()
    _reply({"ok": True, "stopped": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A TCP proxy that can be cut, driven by JSON lines on stdin")
    parser.add_argument("--listen", required=True, help="host:port to listen on (port 0: any)")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the controlling process decides, and its exit
    # closes the pipe, which stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(split_address(args.listen), split_address(args.target)))


# ---------------------------------------------------------------- the controlling side


class CutProxy:
    """A TCP proxy from `listen` to `target` in a process of its own, that can be cut and healed.

    Every method blocks for the pipe's round trip (about a millisecond) and is thread-safe.
    """

    def __init__(self, target: str, listen: str = "127.0.0.1:0", name: str | None = None) -> None:
        self.target = target
        self.listen = listen
        self.name = name or f"proxy {listen} -> {target}"
        self.port: int | None = None
        self.state = "stopped"
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._cut_at = 0.0
        split_address(target)
        split_address(listen)

    @property
    def address(self) -> str:
        """host:port the proxy listens on (the actual port when asked for port 0)."""
        if self.port is None:
            raise NetCutError(f"{self.name}: not started")
        return f"{split_address(self.listen)[0]}:{self.port}"

    def start(self) -> CutProxy:
        with self._lock:
            if self._proc is not None:
                raise NetCutError(f"{self.name}: already started")
            command = [sys.executable, "-I", "-u", str(Path(__file__).resolve())]
            self._proc = subprocess.Popen(
                [*command, "--listen", self.listen, "--target", self.target],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            try:
                ready = self._read_reply()
            except NetCutError:
                self._kill()
                raise
            if not ready.get("ok"):
                self._kill()
                raise NetCutError(f"{self.name}: {ready.get('error')}")
            self.port = int(ready["port"])
            self.state = "open"
        return self

    def cut(self, mode: str = "blackhole") -> dict[str, Any]:
        """Cuts the link: "blackhole" (silence, connections kept) or "reset" (RST, then refused)."""
        if mode not in MODES:
            raise ValueError(f"unknown cut mode {mode!r} (one of {', '.join(MODES)})")
        result = self._request({"op": "cut", "mode": mode})
        self._cut_at = time.monotonic()
        self.state = mode
        log.info(
            "netcut %s: cut (%s): %d connection(s) %s",
            self.name,
            mode,
            result["affected"],
            "held silent" if mode == "blackhole" else "reset, new ones refused",
        )
        return result

    def heal(self) -> dict[str, Any]:
        """Forwards new connections again; connections blackholed by the cut are reset."""
        was = self.state
        result = self._request({"op": "heal"})
        self.state = "open"
        if was != "open":
            log.info(
                "netcut %s: healed after %.1f s (%s): %d blackholed connection(s) reset",
                self.name,
                time.monotonic() - self._cut_at,
                was,
                result["affected"],
            )
        return result

    def stats(self) -> dict[str, Any]:
        """state, port, connections (open now), blackholed, held_bytes, accepted, forwarded."""
        return self._request({"op": "stats"})

    def close(self) -> None:
        """Stops the proxy: the listener closes, open connections are closed. Idempotent."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.poll() is None and proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.write(b'{"op": "stop"}\n')
                        proc.stdin.flush()
                    with contextlib.suppress(NetCutError):
                        self._read_reply()
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                    proc.wait(timeout=CONTROL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
            finally:
                self._kill()
                self.state = "stopped"

    @property
    def exit_code(self) -> int | None:
        """The proxy process's exit status once it has stopped, else None."""
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> CutProxy:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.poll() is not None:
                raise NetCutError(f"{self.name}: not running (exit status {self.exit_code})")
            try:
                proc.stdin.write(json.dumps(message).encode() + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                raise NetCutError(f"{self.name}: the proxy process is gone: {exc}") from exc
            reply = self._read_reply()
        if not reply.get("ok"):
            raise NetCutError(f"{self.name}: {message.get('op')}: {reply.get('error')}")
        return reply

    def _read_reply(self) -> dict[str, Any]:
        """One JSON line from the proxy process, within CONTROL_TIMEOUT_S."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NetCutError(f"{self.name}: no answer within {CONTROL_TIMEOUT_S} s")
                if not selector.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise NetCutError(f"{self.name}: the proxy process exited (status {proc.wait()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply


def parse_routes(text: str) -> list[tuple[str, str]]:
    """The output of `stack/bin/stack proxies`: (proxy address, PROXIED listener address) per broker."""
    routes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        listen, target = line.split()
        split_address(listen)
        split_address(target)
        routes.append((listen, target))
    if not routes:
        raise ValueError("no proxy routes")
    return routes


def stack_routes(repo: Path = REPO) -> list[tuple[str, str]]:
    done = subprocess.run(
        [str(repo / "stack/bin/stack"), "proxies"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise NetCutError(f"stack/bin/stack proxies failed: {done.stderr.strip()}")
    return parse_routes(done.stdout)


class BrokerProxies:
    """One CutProxy per broker; a worker that bootstraps from `bootstrap` goes through them alone.

    Brokers are numbered from 1, as the stack's nodes. The proxies must run as long as the worker
    does: stopped, they refuse connections like a reset cut.
    """

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        self.proxies = [
            CutProxy(target, listen, name=f"kafka-{n} {listen}") for n, (listen, target) in enumerate(routes, 1)
        ]

    @classmethod
    def from_stack(cls, repo: Path = REPO) -> BrokerProxies:
        """The proxies of the local stack's brokers (`stack/bin/stack proxies`), not started."""
        return cls(stack_routes(repo))

    @property
    def bootstrap(self) -> str:
        """host:port,... of the proxies (what `stack/bin/stack proxied-bootstrap` prints)."""
        return ",".join(proxy.address for proxy in self.proxies)

    @property
    def kafka_url(self) -> str:
        """The proxies as a UBS_KAFKA value: kafka://host:port;host:port..."""
        return "kafka://" + self.bootstrap.replace(",", ";")

    def start(self) -> BrokerProxies:
        try:
            for proxy in self.proxies:
                proxy.start()
        except NetCutError:
            self.close()
            raise
        return self

    def _chosen(self, brokers: Iterable[int] | None) -> list[CutProxy]:
        if brokers is None:
            return list(self.proxies)
        chosen = []
        for n in brokers:
            if not 1 <= n <= len(self.proxies):
                raise ValueError(f"no broker {n} (1 to {len(self.proxies)})")
            chosen.append(self.proxies[n - 1])
        return chosen

    def cut(self, mode: str = "blackhole", brokers: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Cuts the link to every broker, or to the numbered ones (1-based)."""
        return [proxy.cut(mode) for proxy in self._chosen(brokers)]

    def heal(self, brokers: Iterable[int] | None = None) -> list[dict[str, Any]]:
        return [proxy.heal() for proxy in self._chosen(brokers)]

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()

    def __enter__(self) -> BrokerProxies:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
