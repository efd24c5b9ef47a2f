"""The alert rules in a real Prometheus: run by ``make monitoring-check`` (docker/check-monitoring), not ``make test``.

CI runs ``make monitoring-check`` right after ``make test`` on the same stack, so
these tests are left out of any run that does not name this directory or a file
in it: the whole suite would otherwise run them twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _names_this_directory(config: pytest.Config) -> bool:
    """Whether the command line names this directory, a file in it or a test of one."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    for argument in config.args:
        path = Path(argument.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Deselect this directory's tests unless it was asked for by name; a test that stops a service runs last."""
    if _names_this_directory(config):
        items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
        return
    ours = [item for item in items if HERE in Path(str(item.path)).parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if HERE not in Path(str(item.path)).parents]
