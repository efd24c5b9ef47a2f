"""The gateway's bearer token (UBS_API_TOKEN) is compared as the secret itself, never as its masked print."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from app.settings import Secret, settings
from app.web import views
from app.web.views import _authorized


def request(authorization: str) -> Any:
    return SimpleNamespace(headers={"Authorization": authorization})


def test_only_the_token_itself_is_let_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "settings", replace(settings, api_token=Secret("s3cret")))
    assert _authorized(request("Bearer s3cret"))
    assert not _authorized(request(f"Bearer {Secret('s3cret')}"))  # what the masked token prints as
    assert not _authorized(request("Bearer other"))


def test_without_a_token_writes_are_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "settings", replace(settings, api_token=None))
    assert _authorized(request(""))
