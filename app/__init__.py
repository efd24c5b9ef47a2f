"""UBSCore: a balance core on Kafka and Faust.

The package is laid out by role:

- ``app.core``: the pure ledger (wire formats, the one input parser, the rules,
  the invariants). Plain functions; it imports neither Faust nor aiokafka nor the
  database driver, so it loads alone and is tested with plain asserts.
- The Faust shell: ``app.faust_app`` (the app object), ``app.topics``,
  ``app.tables``, ``app.agents`` (the ledger agent), ``app.web`` (the gateway).
- ``app.sink``: the settlement sink and its CQL database.
- ``app.observability``: metrics, the log format, consumer lag.
- ``app.frame``: what the Faust app is built from (its consumer, producer buffer,
  table manager, topic admin, and the defences against Faust and aiokafka
  misbehaviour it starts with, and the failpoints that test them); every private
  Faust attribute they read is read in ``app.frame.faust_internals``.
- ``app.guards``: the timers and services that run on the app (input, recovery and
  group watches, /metrics).
- ``app.tools``: what operators run: several workers, the verifier.

Imports go one way, from the top of this list's order of layers down (core, base
modules, observability, frame, faust_app, topics, tables, what runs on the app,
tools, worker); tests/unit/test_import_direction.py holds the table.

Importing ``app`` loads none of it. Asking for ``app.app`` (as ``faust -A app``
does) assembles the complete worker (``app.worker``) and returns its Faust app.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.worker import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
