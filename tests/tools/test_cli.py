"""The operator commands without a stack: dead-letter selection and corrections, times, output, error lines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from app.observability.consumer_lag import PartitionLag
from app.tools import dlq, output
from app.tools.cli import checks
from app.tools.gateway_client import Answer, Gateway
from app.web.auth import find, keyring, parse_keys

REPO = Path(__file__).resolve().parents[2]
NOW_MS = 1_800_000_000_000


def letter(
    offset: int,
    reason: str = "invalid_amount",
    value: Any = None,
    key: Optional[str] = "1001",
    timestamp: Optional[int] = NOW_MS,
    truncated: bool = False,
) -> dlq.DeadLetter:
    """A letter as the agent writes it (app.agents.ubscore.dead_letter), read back from its record."""
    body = value if isinstance(value, str) else json.dumps(value or {"op_id": f"o{offset}", "user_id": 1001})
    written = {
        "error": {"error": reason, "field": "amount", "message": "bad"},
        "topic": "balance.operations",
        "partition": 3,
        "offset": 100 + offset,
        "timestamp": timestamp,
        "key": key,
        "value": body,
        "value_truncated": truncated,
    }
    return dlq.letter_from_record(2, offset, NOW_MS + 5, json.dumps(written).encode())


def test_a_letter_reads_back_with_its_reason_place_and_user() -> None:
    read = letter(7, value={"op_id": "x", "user_id": 42, "amount": 1.5}, key="42")
    assert (read.reason, read.field, read.position, read.source) == (
        "invalid_amount",
        "amount",
        "2:7",
        "balance.operations:3:107",
    )
    assert read.user_id() == 42
    assert letter(1, value="not json", key="77").user_id() == 77
    assert letter(1, value="not json", key=None).user_id() is None


def test_a_record_that_is_not_a_letter_still_shows() -> None:
    read = dlq.letter_from_record(0, 4, NOW_MS, b"\xff garbage")
    assert (read.reason, read.timestamp_ms, read.user_id()) == ("unreadable_letter", NOW_MS, None)


def test_selection_by_reason_user_time_place_and_limit() -> None:
    letters = [
        letter(0, "invalid_amount", timestamp=NOW_MS - 7_200_000),
        letter(1, "invalid_json", value="{", timestamp=NOW_MS - 1_800_000),
        letter(2, "invalid_amount", value={"op_id": "a", "user_id": 2002}, key="2002", timestamp=NOW_MS - 60_000),
        letter(3, "invalid_amount", timestamp=NOW_MS),
    ]
    offsets = lambda chosen: [c.offset for c in chosen]  # noqa: E731
    assert offsets(dlq.select(letters, dlq.Selection(reason="invalid_amount"))) == [0, 2, 3]
    assert offsets(dlq.select(letters, dlq.Selection(user=1001))) == [0, 1, 3]
    since = dlq.parse_time("1h", NOW_MS)
    assert offsets(dlq.select(letters, dlq.Selection(since_ms=since))) == [1, 2, 3]
    assert offsets(dlq.select(letters, dlq.Selection(since_ms=since, until_ms=NOW_MS))) == [1, 2]
    assert offsets(dlq.select(letters, dlq.Selection(position=(2, 1)))) == [1]
    assert offsets(dlq.select(letters, dlq.Selection(position=(3, 1)))) == []
    assert offsets(dlq.select(letters, dlq.Selection(reason="invalid_amount", limit=2))) == [2, 3]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90s", NOW_MS - 90_000),
        ("15m", NOW_MS - 900_000),
        ("2h", NOW_MS - 7_200_000),
        ("1d", NOW_MS - 86_400_000),
        ("2027-01-15T08:00:00", 1_800_000_000_000),
        ("2027-01-15T09:00:00+01:00", 1_800_000_000_000),
    ],
)
def test_times_absolute_and_ago(text: str, expected: int) -> None:
    assert dlq.parse_time(text, NOW_MS) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-5m", ""])
def test_a_bad_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO time"):
        dlq.parse_time(text, NOW_MS)


def test_positions_and_corrections_parse() -> None:
    assert dlq.parse_position("3:17") == (3, 17)
    for bad in ("3", "a:1", "1:", "1:-2"):
        with pytest.raises(ValueError):
            dlq.parse_position(bad)
    assert dlq.parse_correction("amount=5") == (["amount"], 5)
    assert dlq.parse_correction('amount="5"') == (["amount"], "5")
    assert dlq.parse_correction("source=locked") == (["source"], "locked")
    assert dlq.parse_correction("buyer.hold_id=b-1") == (["buyer", "hold_id"], "b-1")
    for bad in ("amount", "=5", "a..b=1"):
        with pytest.raises(ValueError):
            dlq.parse_correction(bad)


def test_a_corrected_replay_has_its_own_stable_op_id() -> None:
    bad = letter(0, value={"op_id": "p4", "kind": "deposit", "user_id": 1001, "asset": 1, "amount": 1.5})
    fix = [dlq.parse_correction("amount=5")]
    first = dlq.replay_operation(bad, fix)
    assert {k: v for k, v in first.items() if k != "op_id"} == {
        "kind": "deposit",
        "user_id": 1001,
        "asset": 1,
        "amount": 5,
    }
    assert first["op_id"].startswith("p4.r") and len(first["op_id"]) == len("p4.r") + 8
    assert dlq.replay_operation(bad, fix) == first  # replayed twice: the same op_id, a duplicate
    assert dlq.replay_operation(bad, [dlq.parse_correction("amount=6")])["op_id"] != first["op_id"]
    assert dlq.replay_operation(bad, []) == json.loads(bad.value)  # uncorrected: the very operation
    named = dlq.replay_operation(bad, fix + [dlq.parse_correction("op_id=mine")])
    assert named["op_id"] == "mine"
    long = letter(1, value={"op_id": "x" * 64, "user_id": 1, "amount": 1.5})
    assert len(dlq.replay_operation(long, fix)["op_id"]) == 64


@pytest.mark.parametrize(
    "value, truncated, why",
    [
        ("not json", False, "not a JSON object"),
        ("[1, 2]", False, "not a JSON object"),
        ({"kind": "deposit", "user_id": 1}, False, "no op_id"),
        ({"op_id": "a"}, False, "no user_id"),
        ({"op_id": "a", "user_id": 1}, True, "cut"),
    ],
)
def test_letters_that_cannot_become_operations(value: Any, truncated: bool, why: str) -> None:
    with pytest.raises(dlq.NotReplayable, match=why):
        dlq.replay_operation(letter(0, value=value, truncated=truncated), [])


def test_account_table_shows_balances_and_holds() -> None:
    text = output.account_text(
        {
            "user_id": 1001,
            "seq": 3,
            "balances": {"2": {"available": 7, "locked": 0}, "1": {"available": 1300, "locked": 200}},
            "holds": [{"hold_id": "o-1", "asset": 1, "remaining": 200, "expires_at_ms": None}],
        }
    )
    assert text.splitlines() == [
        "user 1001  seq 3",
        "asset  available  locked",
        "    1       1300     200",
        "    2          7       0",
        "hold  asset  remaining  expires",
        "o-1       1        200  -",
    ]
    coded = output.account_text(
        {"user_id": 5, "seq": 1, "balances": {"1": {"available": 1, "locked": 0, "code": "BTC"}}, "holds": []}
    )
    assert coded.splitlines()[1:] == [
        "asset  code  available  locked",
        "    1  BTC           1       0",
        "no open holds",
    ]


def test_account_table_says_when_more_holds_are_open_than_it_shows() -> None:
    first = [{"hold_id": f"o-{i}", "asset": 1, "remaining": 1, "expires_at_ms": None} for i in range(2)]
    body = {
        "user_id": 7,
        "seq": 9,
        "balances": {"1": {"available": 0, "locked": 5}},
        "holds": first,
        "holds_more": True,
    }
    assert output.account_text(body).splitlines()[-1] == "more open holds after o-1: GET /accounts/7/holds"


def test_lag_table_and_totals() -> None:
    lags: Dict[str, List[PartitionLag]] = {
        "ledger": [
            PartitionLag("ledger", "ubscore", "balance.operations", 0, end=10, committed=4, beginning=0),
            PartitionLag("ledger", "ubscore", "balance.operations", 1, end=5, committed=None, beginning=2),
        ],
        "sink": [PartitionLag("sink", "ubscore-settlement", "balance.events", 0, end=3, committed=3, beginning=0)],
    }
    table, totals = output.lag_text(lags).split("\n\n")
    assert table.splitlines() == [
        "consumer  topic               partition  end  committed  lag",
        "ledger    balance.operations          0   10  4            6",
        "ledger    balance.operations          1    5  -            3",
        "sink      balance.events              0    3  3            0",
    ]
    assert totals.splitlines() == [
        "consumer  group               partitions  lag",
        "ledger    ubscore                      2    9",
        "sink      ubscore-settlement           1    0",
    ]
    data = output.lag_json(lags)
    assert (data["ledger"]["lag"], data["sink"]["group"]) == (9, "ubscore-settlement")
    assert data["ledger"]["partitions"][1] == {
        "topic": "balance.operations",
        "partition": 1,
        "end": 5,
        "committed": None,
        "beginning": 2,
        "lag": 3,
    }


def test_an_event_is_one_line() -> None:
    line = output.event_line(
        {"op_id": "t-1", "kind": "transfer_out", "user_id": 1, "status": "accepted", "reason": None, "seq": 4,
         "asset": 1, "amount": 200, "available": 1100, "locked": 0, "counterparty": 2002, "ts": 0}
    )  # fmt: skip
    assert line == (
        "1970-01-01T00:00:00.000Z  seq=4 op_id=t-1 kind=transfer_out status=accepted asset=1 amount=200"
        " available=1100 locked=0 counterparty=2002"
    )


def test_refusals_read_in_one_line() -> None:
    refused = Answer(422, {"error": "invalid_amount", "field": "amount", "message": "amount must be an integer"})
    assert refused.error_line() == "422 invalid_amount (amount): amount must be an integer"
    assert Answer(502, {"text": "Bad Gateway"}).error_line() == "502 error: Bad Gateway"


def ubscore(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The console script's code path, as ``python -m app`` (no stack: nothing here reaches one)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["workers", "x"], "the count must be a whole number"),
        (["account"], "Missing argument 'USER'"),
        (["account", "abc"], "'abc' is not a valid integer"),
        (["submit", "--bogus"], "No such option: --bogus"),
        (["submit", "--kind", "borrow"], "'borrow' is not one of"),
        (["submit", "--user", "1"], "give --kind"),
        (["submit", "--json-body", "[1]"], "must be a JSON object"),
        (["tail", "1", "--limit", "0"], "--limit"),
        (["dlq", "list", "--since", "yesterday"], "neither an ISO time"),
        (["dlq", "replay", "--set", "amount"], "is not FIELD=VALUE"),
        (["dlq", "replay", "--offset", "x"], "is not PARTITION:OFFSET"),
        (["keys", "new", "--scopes", "operator"], "Missing option '--id'"),
        (["keys", "new", "--id", "k", "--scopes", "admin"], 'unknown scope "admin"'),
        (["keys", "new", "--id", "k", "--scopes", "operator", "--users", "1-x"], "--users takes user ids"),
        (["keys", "new", "--id", "k", "--scopes", "operator", "--users", "9-5"], "whose first is above its last"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: List[str], says: str) -> None:
    done = ubscore(*args)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_a_worker_that_does_not_answer_is_one_line() -> None:
    done = ubscore("account", "1001", "--worker", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        next(line for line in done.stderr.splitlines() if line.startswith("python -m app account: worker"))
    ]
    assert "http://127.0.0.1:9 did not answer" in done.stderr


def test_kafka_that_does_not_answer_is_one_line() -> None:
    done = ubscore("lag", env={"UBS_KAFKA": "kafka://127.0.0.1:9"})
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Kafka at 127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_the_commands() -> None:
    done = ubscore("--help")
    assert done.returncode == 0
    for name in ("submit", "account", "tail", "lag", "verify", "workers", "dlq", "keys", "worker"):
        assert f"\n  {name} " in done.stdout, name
    assert "replay" in ubscore("dlq", "--help").stdout


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verify_shows_a_progress_bar_on_a_terminal_and_stage_lines_elsewhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = ["operations", "events", "tables", "database"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with checks.verify_progress(steps) as done:
        for stage in steps:
            done(stage, 3)
    shown = terminal.getvalue()
    assert "verify: reading" in shown and "4/4" in shown and "database: 3 read" in shown
    monkeypatch.undo()
    with checks.verify_progress(steps) as done:
        done("operations", 7)
    assert "verify: [1/4] operations: 7 read" in capsys.readouterr().err


def test_keys_new_shows_the_secret_once_beside_an_entry_the_key_file_takes() -> None:
    scopes = "operations:write,accounts:read"
    done = ubscore("keys", "new", "--id", "ledger-eu", "--scopes", scopes, "--users", "10-19,30")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    secret = first.removeprefix("UBS_API_KEY=")
    entry = json.loads(second)
    assert entry["id"] == "ledger-eu" and entry["users"] == [[10, 19], [30, 30]] and secret not in second
    assert entry["scopes"] == ["accounts:read", "operations:write"]
    ring = keyring(parse_keys(json.dumps({"keys": [entry]}).encode()), None)
    assert getattr(find(ring, secret), "id", None) == "ledger-eu"
    assert "shown this once" in done.stderr and secret not in done.stderr
    assert ubscore("keys", "new", "--id", "x", "--scopes", "operator").stdout.splitlines()[0] != first


async def test_every_call_to_a_gateway_presents_the_key_and_a_replay_says_which_letter() -> None:
    seen: List[Any] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        return web.json_response({"status": "accepted"})

    server = web.Application()
    server.router.add_route("*", "/{tail:.*}", record)
    async with TestServer(server) as served, ClientSession() as http:
        keyed = Gateway(str(served.make_url("")), "the-secret")
        await keyed.submit(http, {"op_id": "a"}, wait=True, replay="2:7")
        await keyed.account(http, 1001)
        await keyed.result(http, 1001, "a b")
        await Gateway(str(served.make_url("")), None).submit(http, {"op_id": "b"}, wait=False)
    assert seen == [
        ("POST", "/operations?wait=true&replay=2:7", "Bearer the-secret"),
        ("GET", "/accounts/1001", "Bearer the-secret"),
        ("GET", "/operations/1001/a%20b", "Bearer the-secret"),
        ("POST", "/operations", None),
    ]
