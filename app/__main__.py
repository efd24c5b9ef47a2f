"""``python -m app worker -l info``, ``python -m app verify`` and the ``ubscore`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """``ubscore verify ...`` checks the invariants; anything else is Faust's CLI for our app."""
    if sys.argv[1:2] == ["verify"]:
        from app.tools.verifier import main as verify

        sys.exit(verify(sys.argv[2:]))
    if sys.argv[1:2] == ["workers"]:
        from app.tools.launcher import main as workers

        sys.exit(workers(sys.argv[2:]))
    from app.worker import app

    app.main()


if __name__ == "__main__":
    main()
