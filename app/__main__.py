"""``python -m app worker -l info`` and the ``ubscore`` console script: Faust's CLI for our app."""

from __future__ import annotations


def main() -> None:
    """Run Faust's command line with the UBSCore app (worker, tables, agents, send...)."""
    from app import app

    app.main()


if __name__ == "__main__":
    main()
