"""``python -m app worker -l info``, ``python -m app verify`` and the ``ubscore`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """``ubscore verify`` checks the invariants, ``workers`` starts several; the rest is Faust's CLI.

    ``worker`` under ``UBS_ROLE=sink`` runs the settlement sink alone, without the Faust app.
    """
    if sys.argv[1:2] == ["verify"]:
        from app.tools.verifier import main as verify

        sys.exit(verify(sys.argv[2:]))
    if sys.argv[1:2] == ["workers"]:
        from app.tools.launcher import main as workers

        sys.exit(workers(sys.argv[2:]))
    from app.settings import settings

    if sys.argv[1:2] == ["worker"] and settings.role == "sink":
        from app.sink.service import run_alone

        run_alone(_loglevel(sys.argv[2:]))
        return
    from app.worker import app

    app.main()


def _loglevel(args: list[str]) -> str:
    """The level of ``-l LEVEL`` / ``--loglevel LEVEL`` among the worker's arguments (info without one)."""
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-l", "--loglevel"):
            return value
    return "info"


if __name__ == "__main__":
    main()
