"""A real Prometheus for the alert tests: Debian's ``prometheus`` on a free port, the project's rules and config.

promtool's unit tests judge the rules on series a fixture invents; only a server
scraping what a worker really serves shows what an operator is paged for (issue
30: a first dead letter that promtool saw fire and a live server did not). The
server runs the project's prometheus.yml pointed at the test's targets, scraping
and evaluating every ``INTERVAL``, with the rules at the live pace
(tests.monitoring.live_rules). ``FakeTarget`` serves a /metrics text a test sets,
for what needs no stack.

docker/check-monitoring installs the package when ``prometheus`` is missing; the
tests only say so. Each server is this test's own process, stopped by its handle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from app.observability.metrics import TEXT_FORMAT
from tests.monitoring import PROMETHEUS_CONFIG, duration_ms, expressions_in_rules_text, live_config

log = logging.getLogger(__name__)

#: How often the server scrapes its targets and evaluates its rules.
INTERVAL = "1s"
INTERVAL_S = duration_ms(INTERVAL) / 1000
#: "A few intervals": what an alert may take beyond its ``for:`` (or a cause beyond its range) to show: a scrape,
#: an evaluation to pending, one to firing, the test's own poll; doubled, for a loaded CI machine.
FEW_INTERVALS_S = 8 * INTERVAL_S
#: How long a server may take to answer and load its rules.
STARTUP_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Alert:
    """An alert as /api/v1/alerts lists it: pending (its ``for:`` running) or firing."""

    name: str
    state: str
    labels: Tuple[Tuple[str, str], ...]

    def matches(self, name: str, labels: Dict[str, str]) -> bool:
        return self.name == name and set(labels.items()) <= set(self.labels)

    def __str__(self) -> str:
        shown = ",".join(f"{key}={value}" for key, value in self.labels if key not in ("alertname", "severity"))
        return f"{self.name}{{{shown}}}"


class Prometheus:
    """One server of this test, its config, rules, data and log under ``base``."""

    def __init__(self, base: Path, rules: str, targets: Sequence[str]) -> None:
        self.base = base
        self.rules = rules
        self.targets = list(targets)
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None
        self.started = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Prometheus":
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("no prometheus on PATH: docker/check-monitoring installs Debian's package")
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "prometheus.yml"
        config.write_text(live_config(PROMETHEUS_CONFIG.read_text(encoding="utf-8"), self.targets, INTERVAL))
        (self.base / "alerts.yml").write_text(self.rules)  # prometheus.yml names it, relative to itself
        command = [binary, f"--config.file={config}", f"--storage.tsdb.path={self.base / 'data'}"]
        command += [f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self.base / "prometheus.log", "ab") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()
        self._wait_loaded()
        log.info("prometheus_started pid=%s url=%s targets=%s", self.process.pid, self.url, ",".join(self.targets))
        return self

    def _wait_loaded(self) -> None:
        """Until the server answers with every rule of its file loaded: a rule file it refused fails here."""
        wanted = len(expressions_in_rules_text(self.rules))
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                groups = self.api("/api/v1/rules")["groups"]
                if sum(len(group["rules"]) for group in groups) == wanted:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus did not load {wanted} rules in {STARTUP_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        log.info("prometheus_stopped pid=%s", self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.base / "prometheus.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of one answer of the HTTP API."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            answer = json.loads(response.read())
        if answer.get("status") != "success":
            raise ValueError(f"{path}: {answer}")
        return answer["data"]

    def query(self, expression: str) -> List[Dict[str, Any]]:
        """An instant query's result now."""
        result: List[Dict[str, Any]] = self.api("/api/v1/query", query=expression)["result"]
        return result

    def alerts(self) -> List[Alert]:
        """The alerts pending or firing now."""
        return [
            Alert(alert["labels"]["alertname"], alert["state"], tuple(sorted(alert["labels"].items())))
            for alert in self.api("/api/v1/alerts")["alerts"]
        ]

    def fired(self) -> Set[Alert]:
        """Every alert that fired at any evaluation since the server started, from its own ``ALERTS`` series.

        Polling /api/v1/alerts would miss one that fired and resolved between two polls.
        """
        seconds = math.ceil(time.monotonic() - self.started) + 1
        found = self.query(f'max_over_time(ALERTS{{alertstate="firing"}}[{seconds}s])')
        alerts = set()
        for series in found:
            labels = {name: value for name, value in series["metric"].items() if name not in ("__name__", "alertstate")}
            alerts.add(Alert(labels["alertname"], "firing", tuple(sorted(labels.items()))))
        return alerts

    def wait_for_query(self, expression: str, within_s: float) -> List[Dict[str, Any]]:
        """Until ``expression`` has a result; a test's way to know what the server has scraped."""
        deadline = time.monotonic() + within_s
        while not (result := self.query(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for {expression} in {within_s:.0f} s:\n{self.log_tail()}")
            time.sleep(INTERVAL_S / 4)
        return result

    def firing_within(self, within_s: float, name: str, **labels: str) -> Optional[Alert]:
        """The alert once it fires, polling for up to ``within_s``; None if it never did."""
        started = time.monotonic()
        while True:
            found = [alert for alert in self.alerts() if alert.matches(name, labels) and alert.state == "firing"]
            if found:
                log.info("alert_firing alert=%s after_s=%.1f", found[0], time.monotonic() - started)
                return found[0]
            if time.monotonic() - started > within_s:
                log.info("alert_silent name=%s labels=%s for_s=%.1f", name, labels, within_s)
                return None
            time.sleep(INTERVAL_S / 4)

    def resolved_within(self, within_s: float, name: str, **labels: str) -> bool:
        """Whether the alert stops being listed (neither pending nor firing) within ``within_s``."""
        started = time.monotonic()
        while any(alert.matches(name, labels) for alert in self.alerts()):
            if time.monotonic() - started > within_s:
                return False
            time.sleep(INTERVAL_S / 4)
        log.info("alert_resolved name=%s labels=%s after_s=%.1f", name, labels, time.monotonic() - started)
        return True

    def watch(self, span_s: float) -> Set[Alert]:
        """Every alert that fired from the server's start to ``span_s`` from now."""
        time.sleep(span_s)
        return self.fired()


@contextlib.contextmanager
def running_prometheus(base: Path, rules: str, targets: Sequence[str]) -> Iterator[Prometheus]:
    """A server for the duration of the block, stopped (its log's tail shown if the block failed) after."""
    server = Prometheus(base, rules, targets)
    try:
        yield server.start()
    except BaseException:
        print(f"\n--- prometheus log tail ({base / 'prometheus.log'}) ---\n{server.log_tail()}")
        raise
    finally:
        server.stop()


class FakeTarget:
    """A /metrics endpoint serving whatever ``text`` holds: a worker's exposition, without the worker."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-target", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def _handler(self) -> type:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                body = target.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", TEXT_FORMAT)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                """Silent: a scrape a second is no news."""

        return Handler

    def __enter__(self) -> "FakeTarget":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
