"""``python -m app worker -l info``, ``python -m app verify`` and the ``ubscore`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """Faust's command line with UBSCore's commands (app.tools.cli: submit, account, verify, workers...).

    ``worker`` under ``UBS_ROLE=sink`` runs the settlement sink alone, without the Faust app.
    A setting app.settings refuses (a certificate without its key...) ends any command with
    exit 78 and one line naming it: the settings are read when first imported, here.
    """
    from app.errors import ConfigurationError
    from app.exit_codes import refuse_to_start

    try:
        from app.settings import settings
    except ConfigurationError as exc:
        refuse_to_start(str(exc), " ".join(["ubscore", *sys.argv[1:2]]))

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
