"""The shell examples of the README and of the guides in docs/ as data: blocks, commands, answers, matching.

The pages are documentation first, so the rules below keep them readable while
letting tests/integration/test_readme.py run every example of every page in
``PAGES`` against a real worker and fail when the product and a page disagree.

Rules for authors of these pages
--------------------------------

Pages. Each page in ``PAGES`` runs on a world of its own (fresh topics, tables and
keyspace), so its examples start from nothing: a page that needs an asset, a
deposit or a dead letter makes it in an earlier block of the same page. A page
with examples that is not in ``PAGES`` is not run.

Blocks. Every fenced block opened with ```` ```sh ```` is run, whole, in one bash
process (``set -o pipefail``), from the repository root, in the order of the
page; shell functions and variables live until the end of their block. A block
that makes no sense to run (it starts a worker in the foreground, runs the
suite...) opts out with an HTML comment on the line right before its fence::

    <!-- readme-test: skip (starts a worker in the foreground) -->

Commands. A command ends at the end of its line unless the line ends with a
backslash or leaves a quote open (the next lines then belong to it). Every
command must exit 0. A command that would follow a topic for ever must be
written to end (``--timeout-ms``, ``--max-messages``, ``kcat -e``).

Answers. Comment lines that follow a command and come before the next one are
prose, except these, which are the answer the command prints (its standard
output; blank lines of the output are ignored):

* ``# {...`` or ``# [...``: one output line that is a JSON value. A value whose
  brackets are not closed at the end of the comment line goes on over the next
  ``#`` lines until they are (wrap long answers that way).
* ``#> text``: one output line as the tool prints it (a table row, ``key => value``).
  Runs of spaces or tabs count as one space. If ``text`` contains ``{`` or ``[`` and
  what starts there is a JSON value, the line is text up to it, then that JSON value.
* ``# ...`` or ``#> ...`` alone: any number of output lines (none included).

Without a ``...`` line, the answer has exactly as many lines as shown, in that order.

Matching. JSON is compared as values, never as text (spacing and key order do
not matter): every key shown must be in the answer with the same value, and an
object must have no key that is not shown, unless it has ``...`` among its
members (``{"op_id":"t-1",...,"status":"accepted",...}``). An array has exactly
the elements shown, unless its last element is ``...``. ``1795...`` is any number
whose digits start with 1795 (timestamps), ``"amount must be...`` (a string ending
in ``...``) any string that starts with what precedes the dots, and a bare ``...``
as a value any value. In text, ``...`` is any run of characters.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

SKIP_MARKER = re.compile(r"^<!--\s*readme-test:\s*skip\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
DOTS = "..."

#: The pages whose ```sh examples run against a worker, each on a world of its own, in this order.
PAGES = ("README.md", "docs/trading.md", "docs/cli.md", "docs/api-keys.md")


class ReadmeError(ValueError):
    """A page breaks one of the rules above (a wrapped answer never closed, output before a command)."""


# --- JSON patterns ---------------------------------------------------------------------------------


class AnyValue:
    """A bare ``...`` where a value goes."""

    def __repr__(self) -> str:
        return "..."


ANY = AnyValue()


@dataclass(frozen=True)
class NumberPrefix:
    """``1795...``: a number whose decimal digits start with these."""

    digits: str


@dataclass(frozen=True)
class StringPrefix:
    """``"amount must be..."``: a string that starts with this."""

    start: str


@dataclass
class ObjectPattern:
    members: Dict[str, "Pattern"]
    #: ``...`` among the members: the answer may have keys that are not shown.
    open: bool = False


@dataclass
class ArrayPattern:
    items: List["Pattern"]
    #: ``...`` as the last element: more elements may follow those shown.
    open: bool = False


Pattern = Union[AnyValue, NumberPrefix, StringPrefix, ObjectPattern, ArrayPattern, str, int, float, bool, None]


class _PatternParser:
    """Recursive descent over JSON with ``...`` where the rules allow it; positions in errors are offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Pattern:
        value = self.value()
        self.skip_space()
        if self.pos != len(self.text):
            raise ReadmeError(f"unexpected text after the JSON value at {self.pos}: {self.text[self.pos :]!r}")
        return value

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def dots(self) -> bool:
        if self.text.startswith(DOTS, self.pos):
            self.pos += len(DOTS)
            return True
        return False

    def value(self) -> Pattern:
        self.skip_space()
        if self.dots():
            return ANY
        char = self.text[self.pos : self.pos + 1]
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char == '"':
            text = self.string()
            return StringPrefix(text[: -len(DOTS)]) if text.endswith(DOTS) else text
        return self.scalar()

    def string(self) -> str:
        try:
            text, self.pos = json.JSONDecoder().raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise ReadmeError(f"bad string at {self.pos}: {exc}") from exc
        return str(text)

    def scalar(self) -> Pattern:
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return value
        found = NUMBER.match(self.text, self.pos)
        if found is None:
            raise ReadmeError(f"expected a JSON value at {self.pos}: {self.text[self.pos : self.pos + 20]!r}")
        self.pos = found.end()
        if self.dots():
            return NumberPrefix(found.group())
        number: Union[int, float] = json.loads(found.group())
        return number

    def expect(self, char: str) -> None:
        self.skip_space()
        if self.text[self.pos : self.pos + 1] != char:
            raise ReadmeError(f"expected {char!r} at {self.pos}: {self.text[self.pos : self.pos + 20]!r}")
        self.pos += 1

    def next_is(self, char: str) -> bool:
        self.skip_space()
        if self.text[self.pos : self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    def object(self) -> ObjectPattern:
        self.expect("{")
        result = ObjectPattern({})
        if self.next_is("}"):
            return result
        while True:
            self.skip_space()
            if self.dots():
                result.open = True
            else:
                self.skip_space()
                if self.text[self.pos : self.pos + 1] != '"':
                    raise ReadmeError(f"expected a key or ... at {self.pos}")
                key = self.string()
                self.expect(":")
                result.members[key] = self.value()
            if self.next_is("}"):
                return result
            self.expect(",")

    def array(self) -> ArrayPattern:
        self.expect("[")
        result = ArrayPattern([])
        if self.next_is("]"):
            return result
        while True:
            self.skip_space()
            if self.dots():
                result.open = True
                self.expect("]")
                return result
            result.items.append(self.value())
            if self.next_is("]"):
                return result
            self.expect(",")


def parse_pattern(text: str) -> Pattern:
    """A JSON value with the pages' ``...`` abridgements (rules in the module docstring)."""
    return _PatternParser(text).parse()


def match_value(pattern: Pattern, actual: Any, path: str = "$") -> Optional[str]:
    """None when ``actual`` (decoded JSON) matches; else where and how it differs, for the failure report."""
    if isinstance(pattern, AnyValue):
        return None
    if isinstance(pattern, NumberPrefix):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        if ok and json.dumps(actual).startswith(pattern.digits):
            return None
        return f"{path}: expected a number starting {pattern.digits}, got {json.dumps(actual)}"
    if isinstance(pattern, StringPrefix):
        if isinstance(actual, str) and actual.startswith(pattern.start):
            return None
        return f"{path}: expected a string starting {pattern.start!r}, got {json.dumps(actual)}"
    if isinstance(pattern, ObjectPattern):
        return _match_object(pattern, actual, path)
    if isinstance(pattern, ArrayPattern):
        return _match_array(pattern, actual, path)
    if type(pattern) is type(actual) and pattern == actual:
        return None
    return f"{path}: expected {json.dumps(pattern)}, got {json.dumps(actual)}"


def _match_object(pattern: ObjectPattern, actual: Any, path: str) -> Optional[str]:
    if not isinstance(actual, dict):
        return f"{path}: expected an object, got {json.dumps(actual)}"
    for key, expected in pattern.members.items():
        if key not in actual:
            return f"{path}: key {key!r} is missing"
        problem = match_value(expected, actual[key], f"{path}.{key}")
        if problem:
            return problem
    extra = [key for key in actual if key not in pattern.members]
    if extra and not pattern.open:
        return f"{path}: keys not shown: {', '.join(extra)} (show them, or abridge the object with ...)"
    return None


def _match_array(pattern: ArrayPattern, actual: Any, path: str) -> Optional[str]:
    if not isinstance(actual, list):
        return f"{path}: expected an array, got {json.dumps(actual)}"
    shown = len(pattern.items)
    if len(actual) < shown or (len(actual) > shown and not pattern.open):
        return f"{path}: expected {shown}{' or more' if pattern.open else ''} elements, got {len(actual)}"
    for index, expected in enumerate(pattern.items):
        problem = match_value(expected, actual[index], f"{path}[{index}]")
        if problem:
            return problem
    return None


# --- answers: one output line each, or a gap ------------------------------------------------------


@dataclass
class OutputLine:
    """One expected output line: text (maybe empty) then, optionally, a JSON value; or a gap."""

    source: str
    line: int
    gap: bool = False
    text: str = ""
    json: Optional[Tuple[Pattern]] = None  # a 1-tuple, so that a JSON null is told from no JSON
    page: str = "README.md"

    def describe(self) -> str:
        return f"{self.page} line {self.line}: {self.source}"


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _glob_matches(expected: str, actual: str) -> bool:
    parts = [re.escape(part) for part in _collapse(expected).split(DOTS)]
    return re.fullmatch(".*".join(parts), _collapse(actual)) is not None


def output_line(source: str, line: int, page: str = "README.md") -> OutputLine:
    """An answer line from its text (``# `` or ``#>`` already taken off)."""
    text = source.strip()
    if text == DOTS:
        return OutputLine(source, line, gap=True, page=page)
    for index, char in enumerate(text):
        if char in "{[":
            try:
                pattern = parse_pattern(text[index:])
            except ReadmeError:
                if index == 0:
                    raise
                break
            return OutputLine(source, line, text=text[:index], json=(pattern,), page=page)
    return OutputLine(source, line, text=text, page=page)


def match_line(expected: OutputLine, actual: str) -> Optional[str]:
    """None when one actual output line matches one expected line."""
    if expected.json is None:
        return None if _glob_matches(expected.text, actual) else f"expected {expected.text!r}, got {actual!r}"
    opening = next((i for i, char in enumerate(actual) if char in "{["), None)
    if opening is None:
        return f"expected JSON, got {actual!r}"
    if not _glob_matches(expected.text, actual[:opening]):
        return f"expected {expected.text!r} before the JSON, got {actual[:opening]!r}"
    try:
        value = json.loads(actual[opening:])
    except json.JSONDecodeError:
        return f"expected JSON, got {actual!r}"
    return match_value(expected.json[0], value)


def match_output(expected: List[OutputLine], output: str) -> Optional[str]:
    """None when a command's output (blank lines dropped) matches its answer lines; else why not."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    if not any(item.gap for item in expected):
        for item, actual in zip(expected, lines, strict=False):
            problem = match_line(item, actual)
            if problem:
                return f"{item.describe()}\n  {problem}"
        if len(lines) != len(expected):
            return f"expected {len(expected)} output lines, got {len(lines)}"
        return None
    if _fits(expected, 0, lines, 0, {}):
        return None
    unmatched = next((i for i in expected if not i.gap and all(match_line(i, a) for a in lines)), None)
    if unmatched is not None:
        return f"{unmatched.describe()}\n  no output line matches it"
    return "the output lines do not come in the order shown"


def _fits(expected: List[OutputLine], i: int, lines: List[str], j: int, memo: Dict[Tuple[int, int], bool]) -> bool:
    """Expected lines from i match output lines from j, gaps taking any number of lines."""
    if (i, j) in memo:
        return memo[(i, j)]
    if i == len(expected):
        result = j == len(lines)
    elif expected[i].gap:
        result = any(_fits(expected, i + 1, lines, k, memo) for k in range(j, len(lines) + 1))
    else:
        result = (
            j < len(lines) and match_line(expected[i], lines[j]) is None and _fits(expected, i + 1, lines, j + 1, memo)
        )
    memo[(i, j)] = result
    return result


# --- blocks and commands --------------------------------------------------------------------------


@dataclass
class Command:
    text: str
    line: int
    expected: List[OutputLine] = field(default_factory=list)


@dataclass
class Block:
    heading: str
    line: int
    source: str
    commands: List[Command]
    skip: Optional[str] = None
    page: str = "README.md"

    @property
    def name(self) -> str:
        """A test id: the section and the block's line, after the page unless it is the README."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        where = "" if self.page == "README.md" else re.sub(r"[^a-z0-9]+", "-", self.page.lower()[:-3]) + "-"
        return f"{where}{slug}-line{self.line}"


def extract_blocks(markdown: str, page: str = "README.md") -> List[Block]:
    """Every ```sh block of the page in order, with its section heading and its skip marker if any."""
    blocks: List[Block] = []
    heading, previous, start = "", "", 0
    fence: Optional[str] = None
    skip: Optional[str] = None
    body: List[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        found = FENCE.match(line)
        if fence is None:
            if found:
                fence, start, body = found.group(1), number, []
                marker = SKIP_MARKER.match(previous.strip())
                skip = (marker.group(1).strip("() ") or "opted out") if marker else None
            elif title := HEADING.match(line):
                heading = title.group(2)
        elif found and not found.group(1):
            if fence == "sh":
                source = "\n".join(body)
                blocks.append(Block(heading, start, source, split_commands(body, start + 1, page), skip, page))
            fence = None
        else:
            body.append(line)
        previous = line
    return blocks


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # a quote still open
        return False
    return True


def _brackets_open(text: str) -> int:
    """How many brackets ``text`` leaves open, strings skipped."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return depth


def _answer_text(comment: str) -> Optional[str]:
    """The output a comment line shows, or None for prose."""
    if comment.startswith("#>"):
        return comment[2:]
    body = comment[1:].strip()
    if body.startswith(("{", "[")) or body == DOTS:
        return body
    return None


def split_commands(lines: List[str], first_line: int, page: str = "README.md") -> List[Command]:
    """Commands with their answers; ``first_line`` is the line number of ``lines[0]`` in ``page``."""
    commands: List[Command] = []
    pending: List[str] = []
    pending_line = 0
    index = 0
    while index < len(lines):
        line, number = lines[index], first_line + index
        index += 1
        if pending:
            pending.append(line)
        elif not line.strip():
            continue
        elif line.lstrip().startswith("#"):
            answer = _answer_text(line.strip())
            if answer is None:
                continue
            if not commands:
                raise ReadmeError(f"{page} line {number}: an answer before any command")
            while _brackets_open(answer) > 0 and not answer.lstrip().startswith(DOTS):
                if index >= len(lines) or not lines[index].lstrip().startswith("#"):
                    raise ReadmeError(f"{page} line {number}: a JSON answer whose brackets are never closed")
                answer += " " + re.sub(r"^#>?", "", lines[index].strip()).strip()
                index += 1
            commands[-1].expected.append(output_line(answer, number, page))
            continue
        else:
            pending, pending_line = [line], number
        text = "\n".join(pending)
        if _complete(text):
            commands.append(Command(text, pending_line))
            pending = []
    if pending:
        raise ReadmeError(f"{page} line {pending_line}: a command never ends (open quote or trailing backslash)")
    return commands


# --- pointing the examples at a test's own worker and world ---------------------------------------


@dataclass(frozen=True)
class Names:
    """What the pages name literally, as one test world has it."""

    port: int
    topic_prefix: str
    app_id: str
    keyspace: str


def rewrite(command: str, names: Names) -> str:
    """The command aimed at the test's worker: the four things the pages name with their defaults.

    The gateway at :6066, the topics ``balance.*``, the consumer groups ``ubscore`` and
    ``ubscore-settlement``, the keyspace in ``ubscore.<table>``. Nothing else changes.
    """
    text = re.sub(r"\b(localhost|127\.0\.0\.1):6066\b", rf"\g<1>:{names.port}", command)
    text = re.sub(r"(?<![\w.-])balance\.(?=[a-z])", f"{names.topic_prefix}balance.", text)
    text = re.sub(r"(--group\s+)ubscore\b", rf"\g<1>{names.app_id}", text)
    return re.sub(r"(?<![\w./-])ubscore\.(?=[a-z_]+\b)", f"{names.keyspace}.", text)


def script(commands: List[str], outdir: str) -> str:
    """A bash script running the commands in one shell, each one's stdout, stderr and status to files.

    ``{ ...; }`` keeps every command in the same shell, so functions and variables
    stay defined for the next ones; stdin is /dev/null so nothing waits on a terminal.
    """
    parts = ["set -o pipefail"]
    for index, command in enumerate(commands):
        files = f"{outdir}/{index}"
        parts.append(f"{{\n{command}\n}} >{files}.out 2>{files}.err </dev/null\necho $? >{files}.rc")
    return "\n".join(parts) + "\n"


def restore(output: str, names: Names) -> str:
    """The output in the pages' names: the reverse of ``rewrite``, so answers can show ``balance.operations``.

    The app id goes first: the world's app id contains the topic prefix without its dot.
    """
    text = output.replace(names.app_id, "ubscore").replace(names.keyspace, "ubscore")
    text = text.replace(f"{names.topic_prefix}balance.", "balance.")
    return re.sub(rf":{names.port}\b", ":6066", text)
