"""A sink running alone serves /metrics itself, behind the same API keys as a gateway's /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from app.settings import load, settings
from app.sink.alone import MetricsServer
from app.tools.gateway_client import bearer
from app.web import access
from app.web.auth import digest


@pytest.fixture()
def keys(tmp_path: Path) -> Iterator[None]:
    entries = [
        {"id": "scraper", "sha256": digest("scrape-secret"), "scopes": ["metrics:read"]},
        {"id": "reader", "sha256": digest("read-secret"), "scopes": ["accounts:read"]},
    ]
    (tmp_path / "keys.json").write_text(json.dumps({"keys": entries}))
    access.reload(load({"UBS_API_KEYS_FILE": str(tmp_path / "keys.json")}))
    yield
    access.reload(settings)


async def scrape(url: str, secret: str = "") -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=bearer(secret)) as response:
        body = await response.text()
        assert response.status != 200 or "ubscore_sink_events_total" in body
        return response.status


async def test_only_a_key_with_metrics_read_scrapes_it(keys: None, unused_tcp_port: int) -> None:
    server = MetricsServer("127.0.0.1", unused_tcp_port)
    await server.start()
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
        assert [await scrape(url, secret) for secret in ("", "wrong", "read-secret", "scrape-secret")] == [
            401,
            401,
            403,
            200,
        ]
    finally:
        await server.stop()


async def test_without_keys_it_answers_anyone(unused_tcp_port: int) -> None:
    server = MetricsServer("127.0.0.1", unused_tcp_port)
    await server.start()
    try:
        assert await scrape(f"http://127.0.0.1:{unused_tcp_port}/metrics") == 200
    finally:
        await server.stop()
