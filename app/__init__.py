"""UBSCore: a balance core on Kafka and Faust.

Importing the package builds the complete app, so ``faust -A app worker`` works
from the repository root and from an installed package alike.
"""

from app import input_watch  # noqa: F401,E402  (registers the input progress watch)
from app.agents import settlement, ubscore  # noqa: F401,E402  (registers the agents)
from app.app import app  # noqa: F401  (the Faust app object, found by ``faust -A app``)
from app.web import views  # noqa: F401,E402  (registers the HTTP views)

__all__ = ["app"]
