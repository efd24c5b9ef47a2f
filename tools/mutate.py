"""Mutation check: break one money rule at a time in a copy of the repository; the fast tests must notice.

Coverage says a line ran, not that any test would fail if the line were wrong.
Each mutation below is a plausible slip in the rules that decide money (a ``<``
for a ``<=``, a dropped guard, a wrong operand). For each, a copy of the working
tree gets exactly that one change and the fast suite runs against the copy's
``app``: the suite failing means the mutation is "killed", passing means a bug of
that shape would ship unnoticed ("SURVIVED"). An original snippet that is no
longer found exactly once also fails the check, so the list cannot rot silently
when the code moves. Nothing in the repository itself is touched.

    python tools/mutate.py          # `make mutate`
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

# ruff: noqa: T201 - a command-line tool: its report is what it prints

REPO = Path(__file__).resolve().parents[1]
TESTS = ("tests/unit", "tests/agents", "tests/sink")
SUITE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutation:
    """Replace ``original`` (which must occur exactly once in ``path``) with ``mutant``."""

    path: str
    original: str
    mutant: str
    what: str


LEDGER, FIELDS = "app/core/ledger.py", "app/core/field_checks.py"
WIRE, AGENT = "app/core/wire.py", "app/agents/ubscore.py"
MUTATIONS = (
    Mutation(
        LEDGER,
        "if new.available < 0 or new.locked < account.held(operation.asset):",
        "if new.available <= 0 or new.locked < account.held(operation.asset):",
        "spending the whole balance is refused",
    ),
    Mutation(
        LEDGER,
        "if new.available < 0 or new.locked < account.held(operation.asset):",
        "if new.available < 0:",
        "locked may go below what its holds lock",
    ),
    Mutation(
        LEDGER,
        "    seq = account.seq + 1\n    if new.available < 0",
        "    seq = account.seq + 2\n    if new.available < 0",
        "an operation skips a seq",
    ),
    Mutation(
        LEDGER,
        "return Balance(current.available, current.locked - amount)",
        "return Balance(current.available - amount, current.locked)",
        "a transfer from locked debits available",
    ),
    Mutation(
        LEDGER,
        "new = Balance(current.available + credit.amount, current.locked)",
        "new = Balance(credit.amount, current.locked)",
        "a credit leg overwrites the payee's balance instead of adding to it",
    ),
    Mutation(
        LEDGER,
        "return origin.offset <= self.applied.get(origin.stream, -1)",
        "return origin.offset < self.applied.get(origin.stream, -1)",
        "a redelivery of the last applied offset is applied again",
    ),
    Mutation(
        LEDGER,
        "if stored is not None and stored.origin != origin:",
        "if stored is not None:",
        "a result of this very message beyond the account's offset is resent, not re-applied",
    ),
    Mutation(
        WIRE,
        "if isinstance(value, bool) or not isinstance(value, int):",
        "if not isinstance(value, int):",
        "true counts as the number 1",
    ),
    Mutation(FIELDS, "MAX_AMOUNT = 2**63 - 1", "MAX_AMOUNT = 2**63", "an amount that overflows a CQL bigint"),
    Mutation(
        WIRE,
        "body[key] = REPEATED if key in body else value",
        "body[key] = value",
        "a key given twice silently takes the last value",
    ),
    Mutation(
        WIRE,
        "return int(token) if len(token) <= MAX_NUMBER_CHARS else OversizedNumber(token)",
        "return int(token) if len(token) < MAX_NUMBER_CHARS else OversizedNumber(token)",
        "the number-length bound is off by one",
    ),
    Mutation(
        AGENT,
        "if last is None or message.offset > last:",
        "if last is None:",
        "the input cursor stops after the first message",
    ),
    Mutation(
        AGENT,
        "if last is None or message.offset > last:",
        "if True:",
        "a redelivered older message moves the input cursor back",
    ),
    Mutation(
        AGENT,
        "if (stored is None or first_attempt) and failure_for is not None:",
        "if failure_for is not None:",
        "a failure replaces an operation's stored result",
    ),
)


def copy_repository(target: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as they are in the working tree (uncommitted edits too)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_suite(root: Path) -> Optional[str]:
    """Run the fast tests with ``root`` as the code under test; None when all pass, else the first failure."""
    env = dict(os.environ, PYTHONPATH=str(root), UBS_STORE="memory://", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *TESTS]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "the suite timed out"  # a mutation that hangs the suite is noticed too
    if done.returncode == 0:
        return None
    # The summary lines (-rfE) name the test: "FAILED tests/...::test_x - why"; log lines do not.
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR ")) and "::" in line]
    return failed[0] if failed else f"pytest exited {done.returncode}"


def imports_copy(root: Path) -> bool:
    """The copy's ``app`` is the one imported (not the editable install of the repository)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    code = "import app; print(app.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    return done.returncode == 0 and Path(done.stdout.strip()).resolve().is_relative_to(root.resolve())


def try_mutation(mutation: Mutation, root: Path) -> Tuple[str, str]:
    """Apply one mutation to ``root``, run the suite, restore the file: the verdict and what decided it."""
    path = root / mutation.path
    text = path.read_text()
    if text.count(mutation.original) != 1:
        return "NOT FOUND", f"the original is not in {mutation.path} exactly once"
    path.write_text(text.replace(mutation.original, mutation.mutant))
    try:
        failure = run_suite(root)
    finally:
        path.write_text(text)
    return ("SURVIVED", "no test failed") if failure is None else ("killed", f"by {failure}")


def check(mutations: Sequence[Mutation], root: Path) -> List[str]:
    """Try each mutation alone; the report lines of those not killed."""
    failures = []
    for mutation in mutations:
        verdict, detail = try_mutation(mutation, root)
        line = f"{verdict:<9} {mutation.path}: {mutation.what}"
        print(f"{line}\n          {detail[:150]}", flush=True)
        if verdict != "killed":
            failures.append(line)
    return failures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ubscore-mutate-") as temp:
        root = Path(temp)
        copy_repository(root)
        if not imports_copy(root):
            print("the copy's app package is not the one imported; check PYTHONPATH", file=sys.stderr)
            return 1
        baseline = run_suite(root)
        if baseline is not None:
            print(f"the unmutated suite fails in the copy: {baseline}", file=sys.stderr)
            return 1
        failures = check(MUTATIONS, root)
    print(f"{len(MUTATIONS) - len(failures)} of {len(MUTATIONS)} mutations killed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
