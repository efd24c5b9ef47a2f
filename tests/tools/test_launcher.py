"""``ubscore workers``: each worker's environment, and the mix of roles."""

from __future__ import annotations

import pytest

from app.errors import ConfigurationError
from app.settings import load
from app.tools import launcher


def test_roles_are_given_in_turn_with_ports_and_data_directories() -> None:
    settings = load({"UBS_WEB_PORT": "7000", "UBS_DATA_DIR": "/srv/ubs"})
    envs = launcher.worker_envs(settings, 3, ["ledger", "sink"])
    assert [(e["UBS_ROLE"], e["UBS_WEB_PORT"], e["UBS_DATA_DIR"]) for e in envs] == [
        ("ledger", "7000", "/srv/ubs/worker-0"),
        ("sink", "7001", "/srv/ubs/worker-1"),
        ("ledger", "7002", "/srv/ubs/worker-2"),
    ]


@pytest.mark.parametrize("argv", [["2", "--roles", "ledger,bank"], ["2", "--roles"], ["two"]])
def test_bad_arguments_are_one_line_and_status_2(argv: list, capsys: pytest.CaptureFixture) -> None:
    assert launcher.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ubscore workers:") and err.count("\n") == 1


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="UBS_ROLE"):
        load({"UBS_ROLE": "bank"})
