"""The complete worker: the Faust app with every agent, service, guard and view registered.

Agents and views register themselves on the app object when their modules are
imported; this module imports them all, so ``faust -A app worker``, ``python -m
app worker`` and the ``ubscore`` console script run the same complete app.
"""

from app.agents import ubscore  # noqa: F401  (the ledger agent)
from app.faust_app import app
from app.guards import input_watch  # noqa: F401  (the input progress watch)
from app.sink import service  # noqa: F401  (the settlement sink)
from app.web import views  # noqa: F401  (the HTTP gateway)

__all__ = ["app"]
