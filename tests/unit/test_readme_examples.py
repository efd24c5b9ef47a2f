"""The example runner's parser and matcher on small hand-written pages, and every page it runs parsed.

What runs the examples of the README and of the guides in docs/ against a worker
is tests/integration/test_readme.py; here, that a wrong answer on a page would be
caught, and a right one accepted, and that every page in PAGES parses.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.readme_examples import (
    ANY,
    PAGES,
    ArrayPattern,
    Names,
    NumberPrefix,
    ObjectPattern,
    ReadmeError,
    StringPrefix,
    extract_blocks,
    match_output,
    match_value,
    parse_pattern,
    restore,
    rewrite,
    script,
    split_commands,
)

REPO = Path(__file__).resolve().parents[2]

PAGE = """# Title

## Quickstart

<!-- readme-test: skip (starts a worker in the foreground) -->
```sh
make run
```

## Using it

```
# not a shell block: ignored
```

```sh
# deposit; prose, not an answer
curl -s -XPOST localhost:6066/operations \\
  -d '{"op_id":"dep-1"}'
# {"op_id":"dep-1","status":"submitted"}
post '{"op_id":"o-1",
       "amount":5}'   # a quote left open goes on
# {"op_id":"o-1","kind":"lock",
#  "amount":5,...}
kcat -b 127.0.0.1:9092 -t balance.events -C -e
#> ...
#> 1001 => {"seq":7,...}
```
"""

EVENT = '{"op_id":"lock-1","kind":"lock","user_id":1001,"amount":200,"status":"accepted","seq":2,"ts":1796538176666}'


def answer(pattern: str, actual: str) -> str | None:
    return match_output(split_commands(["cmd", f"# {pattern}"], 1)[0].expected, actual)


def test_blocks_come_with_their_section_line_and_skip_marker() -> None:
    blocks = extract_blocks(PAGE)
    assert [(b.heading, b.line, b.skip) for b in blocks] == [
        ("Quickstart", 6, "starts a worker in the foreground"),
        ("Using it", 16, None),
    ]
    assert blocks[1].name == "using-it-line16"
    assert [c.text for c in blocks[0].commands] == ["make run"]


def test_commands_continue_over_backslashes_and_open_quotes_and_collect_their_answers() -> None:
    commands = extract_blocks(PAGE)[1].commands
    assert [c.line for c in commands] == [18, 21, 25]
    assert commands[0].text.endswith("""-d '{"op_id":"dep-1"}'""")
    assert commands[1].text.count("\n") == 1
    assert [len(c.expected) for c in commands] == [1, 1, 2]
    wrapped = commands[1].expected[0]
    assert wrapped.line == 23 and wrapped.json is not None
    assert wrapped.json[0] == ObjectPattern({"op_id": "o-1", "kind": "lock", "amount": 5}, open=True)
    assert commands[2].expected[0].gap and commands[2].expected[1].text == "1001 => "


@pytest.mark.parametrize(
    "lines, message",
    [
        (['# {"a":1}'], "before any command"),
        (["cmd", '# {"a":', "echo"], "never closed"),
        (["echo 'open"], "never ends"),
        (["echo \\"], "never ends"),
    ],
)
def test_pages_that_break_the_rules_are_refused(lines: list[str], message: str) -> None:
    with pytest.raises(ReadmeError, match=message):
        split_commands(lines, 1)


def test_patterns_parse_abridgements() -> None:
    assert parse_pattern('{"ts":17...,"m":"amount must...","x":...,...}') == ObjectPattern(
        {"ts": NumberPrefix("17"), "m": StringPrefix("amount must"), "x": ANY}, open=True
    )
    assert parse_pattern("[1, ...]") == ArrayPattern([1], open=True)
    with pytest.raises(ReadmeError):
        parse_pattern("[..., 1]")
    with pytest.raises(ReadmeError):
        parse_pattern('{"a":1} trailing')


def test_an_abridged_answer_matches() -> None:
    assert answer('{"op_id":"lock-1",...,"status":"accepted",...,"seq":2,"ts":17...}', EVENT) is None
    assert answer('{"op_id": "lock-1", "kind": "lock", ...}', EVENT) is None  # spacing is not compared


def test_an_abridged_answer_with_a_wrong_value_fails() -> None:
    assert answer('{"op_id":"lock-1",...,"seq":3,...}', EVENT) == "README.md line 2: " + (
        '{"op_id":"lock-1",...,"seq":3,...}\n  $.seq: expected 3, got 2'
    )


def test_a_key_not_in_the_answer_fails() -> None:
    problem = answer('{"op_id":"lock-1","hold_id":null,...}', EVENT)
    assert problem is not None and "key 'hold_id' is missing" in problem


def test_a_complete_object_must_show_every_key() -> None:
    problem = answer('{"op_id":"lock-1","kind":"lock","user_id":1001,"amount":200,"status":"accepted","seq":2}', EVENT)
    assert problem is not None and "keys not shown: ts" in problem


def test_values_compare_with_their_types_and_prefixes() -> None:
    assert match_value(parse_pattern("1"), True) is not None
    assert match_value(parse_pattern("1"), "1") is not None
    assert match_value(parse_pattern("null"), None) is None
    assert match_value(parse_pattern("1795..."), 1796538176666) is not None
    assert match_value(parse_pattern('"no result..."'), "no result for this op_id (yet)") is None
    assert match_value(parse_pattern('"no result..."'), "a result") is not None
    assert match_value(parse_pattern("[1,2]"), [1, 2, 3]) is not None
    assert match_value(parse_pattern("[1,...]"), [1, 2, 3]) is None
    assert match_value(parse_pattern('{"a":[{"b":1}]}'), {"a": [{"b": 2}]}) == "$.a[0].b: expected 1, got 2"


def test_output_lines_count_unless_a_gap_is_shown() -> None:
    expected = split_commands(["cmd", '# {"a":1}'], 1)[0].expected
    assert match_output(expected, '{"a":1}\n\n') is None  # blank lines do not count
    assert match_output(expected, '{"a":1}\n{"a":2}') == "expected 1 output lines, got 2"
    assert match_output(expected, "") == "expected 1 output lines, got 0"
    assert match_output(expected, "not json") is not None


def test_text_lines_gaps_and_json_after_text() -> None:
    lines = ["cmd", "#> GROUP  TOPIC   LAG", "#> ...", '#> 1001 => {"seq":7,...}', "#> (... rows)"]
    expected = split_commands(lines, 1)[0].expected
    good = 'GROUP\tTOPIC LAG\nx\ny\n1001 => {"seq":7,"op_id":"k"}\n(2 rows)'
    assert match_output(expected, good) is None
    assert match_output(expected, 'GROUP TOPIC LAG\n1001 => {"seq":7}\n(0 rows)') is None  # a gap may be empty
    assert "no output line matches it" in str(match_output(expected, good.replace('"seq":7', '"seq":8')))
    assert match_output(expected, good.replace(" => ", " -> ")) is not None
    reordered = '(2 rows)\nGROUP TOPIC LAG\n1001 => {"seq":7}'
    assert match_output(expected, reordered) == "the output lines do not come in the order shown"


NAMES = Names(port=40123, topic_prefix="it-abc.", app_id="ubscore-it-abc", keyspace="ubscore_it_abc")


@pytest.mark.parametrize(
    "written, run",
    [
        ("curl -s localhost:6066/accounts/1001", "curl -s localhost:40123/accounts/1001"),
        ("ubscore verify --worker http://127.0.0.1:6066", "ubscore verify --worker http://127.0.0.1:40123"),
        ("curl -s localhost:60661/x", "curl -s localhost:60661/x"),
        ("--topic balance.operations.dlq", "--topic it-abc.balance.operations.dlq"),
        ("-t balance.events -C", "-t it-abc.balance.events -C"),
        ("--describe --group ubscore", "--describe --group ubscore-it-abc"),
        ("--group ubscore-settlement", "--group ubscore-it-abc-settlement"),
        ('cqlsh -e "SELECT * FROM ubscore.balance_events"', 'cqlsh -e "SELECT * FROM ubscore_it_abc.balance_events"'),
        (".venv/bin/ubscore dlq list", ".venv/bin/ubscore dlq list"),
    ],
)
def test_rewrite_points_the_readme_names_at_the_world(written: str, run: str) -> None:
    assert rewrite(written, NAMES) == run


def test_restore_gives_the_output_the_readme_names() -> None:
    output = 'ubscore-it-abc it-abc.balance.operations 4\n{"topic":"it-abc.balance.events"} ubscore_it_abc :40123'
    assert restore(output, NAMES) == 'ubscore balance.operations 4\n{"topic":"balance.events"} ubscore :6066'


def test_script_runs_commands_in_one_shell_with_their_outputs_apart(tmp_path: Path) -> None:
    commands = ['greet() { echo "hi $1"; }', "greet a\necho oops >&2", "false | true", "greet b"]
    path = tmp_path / "block.sh"
    path.write_text(script(commands, str(tmp_path)))
    subprocess.run(["bash", str(path)], check=True, timeout=30)
    assert [(tmp_path / f"{i}.rc").read_text().strip() for i in range(4)] == ["0", "0", "1", "0"]
    assert (tmp_path / "1.out").read_text() == "hi a\n" and (tmp_path / "1.err").read_text() == "oops\n"
    assert (tmp_path / "3.out").read_text() == "hi b\n"


def test_blocks_of_a_guide_name_their_page() -> None:
    blocks = extract_blocks(PAGE, "docs/guide.md")
    assert [b.name for b in blocks] == ["docs-guide-quickstart-line6", "docs-guide-using-it-line16"]
    assert blocks[1].commands[0].expected[0].describe().startswith("docs/guide.md line 20: ")
    with pytest.raises(ReadmeError, match="^docs/guide.md line 1: an answer before any command"):
        split_commands(['# {"a":1}'], 1, "docs/guide.md")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_parses_and_every_example_ends(page: str) -> None:
    """Every block runs or opts out, and nothing follows a topic for ever (the test would wait for it)."""
    blocks = extract_blocks((REPO / page).read_text(), page)
    assert blocks, f"no sh block found in {page}"
    for block in blocks:
        assert block.commands, f"{page} line {block.line}: an sh block without commands"
        for command in block.commands:
            if "kafka-console-consumer" in command.text:
                assert re.search(r"--(timeout-ms|max-messages)\b", command.text), command.text
            if re.search(r"\bkcat\b.*\s-C\b", command.text):
                assert re.search(r"\s-e\b", command.text), command.text
    assert all(c.text.startswith("make ") for b in blocks if b.skip for c in b.commands)
