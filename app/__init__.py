"""UBSCore: a balance core on Kafka and Faust.

The package is laid out by role:

- ``app.core``: the pure ledger (wire formats, the one input parser, the rules,
  the invariants). Plain functions; it imports neither Faust nor aiokafka nor the
  database driver, so it loads alone and is tested with plain asserts.
- The Faust shell: ``app.faust_app`` (the app object), ``app.topics``,
  ``app.tables``, ``app.agents`` (the ledger agent), ``app.web`` (the gateway).
- ``app.sink``: the settlement sink and its CQL database.
- ``app.guards``: defences against Faust and aiokafka misbehaviour, and the
  failpoints that test them; every private Faust attribute they read is read in
  ``app.guards.faust_internals``.
- ``app.tools``: what operators run: several workers, the verifier, topic admin.

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
