"""The complete worker: the Faust app with every agent, service, guard and view its role registers.

Agents and views register themselves on the app object when their modules are
imported; this module imports what ``UBS_ROLE`` asks for, so ``faust -A app worker``,
``python -m app worker`` and the ``ubscore`` console script run the same app. A
worker of role ``sink`` does not use this module (app.__main__ runs the sink alone).
"""

from app.faust_app import app
from app.guards import monitoring  # noqa: F401  (/metrics: Faust's sensor, the ledger's lag)
from app.settings import settings
from app.tools import cli  # noqa: F401  (the operator's commands: ubscore submit, account, tail, lag, dlq...)
from app.web import views  # noqa: F401  (the HTTP gateway)

if settings.role in ("all", "ledger"):
    from app.agents import expiry, ubscore  # noqa: F401  (the ledger agent, its expiry timer)
    from app.frame import ownership
    from app.guards import group_watch, input_watch, recovery_watch  # noqa: F401  (group, progress watches)

    app.startup_task(ownership.watch)  # says when the worker stops (and starts again) vouching for its partitions
if settings.role == "all":
    from app.sink.service import SettlementSink

    app.service(SettlementSink)

__all__ = ["app"]
