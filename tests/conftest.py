"""Shared test setup: unit and agent tests run the app in memory, with no broker."""

from __future__ import annotations

import os

# Agent unit tests use Faust's in-memory store; set before the app is imported.
os.environ.setdefault("UBS_STORE", "memory://")
os.environ.setdefault("UBS_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", ".stack", "test-data"))
