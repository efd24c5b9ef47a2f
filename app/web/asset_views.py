"""The asset registry: every worker holds all of it and lists it; one worker, the registrar, registers.

The registrar is the owner of partition 0; registrations go to it, one at a
time, so each sees the one before it and an asset id is never registered twice
with different codes or scales. ``registered`` is the registry as the other
views read it, to show and convert amounts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import List, Optional

from faust.web import Request, Response, View

from app.core.assets import Asset, parse_asset
from app.core.models import MAX_ASSET
from app.core.wire import decimal_text, decode_json
from app.errors import InvalidOperation
from app.faust_app import app
from app.tables import assets
from app.topics import ASSETS
from app.web import answers, auth, parsing, routing
from app.web.answers import counted
from app.web.guard import audited, note, requires

log = logging.getLogger(__name__)


def registered(asset_id: int) -> Optional[Asset]:
    """A registered asset, from this worker's copy of the registry (every worker holds all of it)."""
    value = assets.get(str(asset_id).encode())
    return None if value is None else Asset(**value)


def _registry() -> List[Asset]:
    return sorted((Asset(**value) for value in assets.values()), key=lambda asset: asset.asset)


#: Registrations at the registrar, one at a time: each sees the one before it in the registry.
_registering = asyncio.Lock()

REGISTRATION_TIMEOUT_S = 10.0


@app.page("/assets")
class AssetsView(View):
    """The asset registry: list it on any worker; register at the registrar (the owner of partition 0)."""

    @counted("assets")
    @requires()
    async def get(self, request: Request) -> Response:
        """Every registered asset, by id."""
        return self.json({"assets": [asset.to_json() for asset in _registry()]})

    @audited("POST", "/assets")
    @counted("register_asset")
    @requires(auth.ASSETS_WRITE)
    async def post(self, request: Request) -> Response:
        """201 when new, 200 when registered identically before, 409 when registered otherwise."""
        raw = await parsing.read_body(request)
        try:
            asset = parse_asset(decode_json(raw))
        except InvalidOperation as error:
            return answers.error(self, 400 if error.field is None else 422, error.reason, error.field, error.message)
        note(asset=asset.asset)
        registrar = routing.owner_of_partition(0)
        if registrar is None:
            return answers.error(self, 503, "not_ready", None, "partition assignment is not known yet; retry shortly")
        if not routing.is_local(registrar):
            return await routing.forward(self, request, registrar)
        async with _registering:
            return await self._register(asset)

    async def _register(self, asset: Asset) -> Response:
        existing = registered(asset.asset)
        if existing is None:
            payload = json.dumps(asset.to_json(), separators=(",", ":")).encode()
            try:
                delivery = await app.producer.send(ASSETS, str(asset.asset).encode(), payload, 0, None, None)
                await asyncio.wait_for(asyncio.shield(delivery), timeout=answers.PRODUCE_TIMEOUT_S)
            except (asyncio.TimeoutError, OSError, RuntimeError) as exc:
                log.warning("asset_register_failed asset=%s error=%r", asset.asset, exc)
                return answers.error(
                    self, 503, "kafka_unavailable", None, "the registration was not confirmed; retry it"
                )
            landed = await _read_back(asset.asset)
            if landed is None:
                return answers.error(self, 504, "registration_timeout", None, "in Kafka, not yet read back; retry it")
            if landed == asset:
                log.info("asset_registered asset=%s code=%s scale=%s", asset.asset, asset.code, asset.scale)
                return self.json(asset.to_json(), status=201)
            existing = landed
        if existing == asset:
            return self.json(asset.to_json(), status=200)
        message = f"asset {asset.asset} is registered as {existing.code} with scale {existing.scale}"
        return answers.error(self, 409, "asset_exists", "asset", message, registered=existing.to_json())


async def _read_back(asset_id: int) -> Optional[Asset]:
    """The registration as this worker's copy of the registry topic shows it, once it arrives."""
    deadline = asyncio.get_running_loop().time() + REGISTRATION_TIMEOUT_S
    # Faust's table reader applies the record and signals nothing: a registration, rare, can poll.
    while registered(asset_id) is None and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return registered(asset_id)


@app.page("/assets/{asset_id}")
class AssetView(View):
    """One registered asset."""

    @counted("asset")
    @requires()
    async def get(self, request: Request, asset_id: str) -> Response:
        """200 with the asset, 404 when it is not registered."""
        value = decimal_text(asset_id, MAX_ASSET)
        if value is None:
            return answers.error(
                self, 400, "invalid_asset", "asset", f"asset must be an integer between 1 and {MAX_ASSET}"
            )
        asset = registered(value)
        if asset is None:
            return answers.error(self, 404, "unknown_asset", "asset", "no asset is registered with this id")
        return self.json(asset.to_json())
