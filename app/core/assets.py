"""The asset registry's rules: what an asset is, and decimal amounts turned into minor units. Pure.

An asset's ``scale`` is the number of decimals of its minor unit (8 for BTC in
satoshi, 2 for USD in cents). A registration never changes once made, so a
decimal amount means the same number of minor units forever. Decimals are a
convenience of the gateway: it converts them before the operation reaches
Kafka, and the ledger, its topics and its tables hold integer minor units only.
A string of digits alone keeps its old meaning (minor units); a decimal string
needs a point (``"0.015"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from app.core.models import MAX_AMOUNT, MAX_ASSET
from app.core.wire import show, whole_number
from app.errors import InvalidOperation

MAX_SCALE = 18  # 10**18 minor units still fit an amount (2**63 - 1 is about 9.2 * 10**18)
_FIELDS = frozenset(("asset", "code", "scale"))
_CODE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,15}")
_DECIMAL = re.compile(r"([0-9]{1,19})\.([0-9]{1,18})")

#: Amount fields of an operation body, and the field naming the asset each is counted in.
AMOUNT_ASSETS = {
    "amount": "asset",
    "base_amount": "base_asset",
    "buyer_fee": "base_asset",
    "quote_amount": "quote_asset",
    "seller_fee": "quote_asset",
}


@dataclass(frozen=True)
class Asset:
    """A registered asset: its id, its ticker code, its scale."""

    asset: int
    code: str
    scale: int

    def to_json(self) -> Dict[str, Any]:
        """Wire form, in the registry topic and the API alike."""
        return {"asset": self.asset, "code": self.code, "scale": self.scale}

    def decimal(self, minor_units: int) -> str:
        """Minor units in decimal form, every decimal of the scale written out ("0.01500000")."""
        if self.scale == 0:
            return str(minor_units)
        whole, fraction = divmod(minor_units, 10**self.scale)
        return f"{whole}.{fraction:0{self.scale}d}"


def parse_asset(body: Any) -> Asset:
    """A registration: exactly asset, code and scale, each valid; InvalidOperation naming the field."""
    if not isinstance(body, dict):
        raise InvalidOperation(None, "invalid_body", "an asset must be a JSON object")
    for name in body:
        if name not in _FIELDS:
            raise InvalidOperation(name, "unknown_field", f"field {show(name)} is not allowed for an asset")
    for name in sorted(_FIELDS):
        if name not in body:
            raise InvalidOperation(name, "missing_field", f"{name} is required")
    asset = whole_number(body["asset"], MAX_ASSET)
    if asset is None:
        raise InvalidOperation("asset", "invalid_asset", f"asset must be an integer 1..{MAX_ASSET}")
    code = body["code"]
    if not isinstance(code, str) or _CODE.fullmatch(code) is None:
        raise InvalidOperation("code", "invalid_code", "code is 1-16 of A-Z, 0-9, '.', '_', '-', starting alphanumeric")
    scale = body["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= MAX_SCALE:
        raise InvalidOperation("scale", "invalid_scale", f"scale must be an integer 0..{MAX_SCALE}")
    return Asset(asset, code, scale)


#: How the rules find a registered asset by id.
Lookup = Callable[[int], Optional[Asset]]


def to_minor_units(body: Any, registry: Lookup) -> Any:
    """The operation body with every decimal amount converted to integer minor units.

    Anything else is left for the operation's own parser to judge: integers,
    digit strings, and fields that are not amounts.
    """
    if not isinstance(body, dict):
        return body
    converted = dict(body)
    for field, asset_field in AMOUNT_ASSETS.items():
        value = body.get(field)
        if isinstance(value, str) and "." in value:
            converted[field] = _minor_units(field, value, _asset_of(body, asset_field, registry, field))
    return converted


def _asset_of(body: Mapping[str, Any], asset_field: str, registry: Lookup, field: str) -> Asset:
    asset_id = whole_number(body.get(asset_field), MAX_ASSET)
    asset = None if asset_id is None else registry(asset_id)
    if asset is None:
        raise InvalidOperation(
            field, "invalid_amount", f"{field} is a decimal, and {asset_field} is not a registered asset (POST /assets)"
        )
    return asset


def _minor_units(field: str, text: str, asset: Asset) -> int:
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidOperation(field, "invalid_amount", f"{field} must be a decimal like 0.015, got {show(text)}")
    whole, fraction = match.groups()
    digits = fraction.rstrip("0")
    if len(digits) > asset.scale:
        raise InvalidOperation(
            field, "invalid_precision", f"{field} has more decimals than {asset.code}'s scale of {asset.scale}"
        )
    value = int(whole) * 10**asset.scale + int(digits.ljust(asset.scale, "0") or "0")
    lowest = 0 if field.endswith("_fee") else 1  # a fee may be nothing
    if not lowest <= value <= MAX_AMOUNT:
        raise InvalidOperation(
            field, "invalid_amount", f"{field} is {value} minor units; it must be between {lowest} and {MAX_AMOUNT}"
        )
    return value
