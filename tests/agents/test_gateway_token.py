"""The gateway's bearer token (UBS_API_TOKEN) is compared as the secret itself, never as its masked print."""

from __future__ import annotations

from dataclasses import replace

from app.settings import Secret, settings
from app.web import access
from app.web.auth import find, presented_secret


def test_only_the_token_itself_is_let_in() -> None:
    ring = access.load(replace(settings, api_keys_file=None, api_token=Secret("s3cret")))
    assert ring.enforced
    assert find(ring, presented_secret("Bearer s3cret")) is not None
    assert find(ring, presented_secret(f"Bearer {Secret('s3cret')}")) is None  # what the masked token prints as
    assert find(ring, presented_secret("Bearer other")) is None


def test_without_a_token_or_keys_the_gateway_is_open() -> None:
    assert not access.load(replace(settings, api_keys_file=None, api_token=None)).enforced
