"""The shell examples of the README and the guides in docs/, run as written against a worker, with their answers.

Every ```sh block of each page in tests/readme_examples.PAGES that does not opt
out runs in order, in one bash process each, from the repository root, with the
worker's UBS_ settings in the environment and .venv/bin first on PATH. The names
the pages give literally (port 6066, topics balance.*, group and keyspace
ubscore) are rewritten to the page's world (tests/readme_examples.rewrite); the
answers shown in ``# {...}`` and ``#>`` comments must match what the commands
print (rules: tests/readme_examples.py). Blocks build on the ones before them on
the same page (user 1001's seq counts from the page's first deposit), so each
page runs as a whole, on a world and worker of its own, started for its first
block that runs and stopped when the next page starts.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from app.observability.consumer_lag import read_lag
from tests.readme_examples import PAGES, Block, Command, Names, extract_blocks, match_output, restore, rewrite, script

from .harness import REPO, Worker, World, ready_worker, world_settings

pytestmark = pytest.mark.integration

BLOCKS = [block for page in PAGES for block in extract_blocks((REPO / page).read_text(), page)]
#: The longest a block may run: the slowest today waits 5 s for an answer and follows two topics for 5 s each.
BLOCK_TIMEOUT_S = 60.0
#: How long to wait for the ledger and the sink to have nothing left to do before a block starts.
IDLE_TIMEOUT_S = 20.0


class PageWorkers:
    """One worker per page, on a world of its own, so each page's user ids start from nothing (seq 1).

    Started for the first block of its page that runs; stopped when a block of
    another page asks for its own, so one worker runs at a time.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.page: Optional[str] = None
        self.worker: Optional[Worker] = None
        self.stack = ExitStack()

    def for_page(self, page: str) -> Worker:
        if self.page != page or self.worker is None:
            self.close()
            slug = re.sub(r"[^a-z0-9]+", "-", page.lower())
            base = self.tmp_path_factory.mktemp(f"examples-{slug}")
            self.page, self.worker = page, self.stack.enter_context(ready_worker(World(), base))
        return self.worker

    def close(self) -> None:
        self.stack.close()
        self.stack, self.page, self.worker = ExitStack(), None, None


@pytest.fixture(scope="module")
def page_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageWorkers]:
    workers = PageWorkers(tmp_path_factory)
    try:
        yield workers
    finally:
        workers.close()


@dataclass
class Outcome:
    command: Command
    run: str
    status: Optional[int]
    stdout: str
    stderr: str
    started: bool

    def problem(self, names: Names) -> Optional[str]:
        """The pages' answers name the defaults (topic balance.events, group ubscore): so is the output first."""
        if self.status is None:
            return "did not finish within the block's time" if self.started else "not reached"
        if self.status != 0:
            return f"exit status {self.status}"
        if not self.command.expected:
            return None
        return match_output(self.command.expected, restore(self.stdout, names))

    def report(self, problem: str) -> str:
        return (
            f"--- command at line {self.command.line}: {problem}\n"
            f"--- as run:\n{self.run}\n--- stdout:\n{self.stdout.rstrip()}\n--- stderr:\n{self.stderr.rstrip()}"
        )


def names_of(worker: Worker) -> Names:
    world = worker.world
    return Names(port=worker.port, topic_prefix=world.prefix, app_id=world.app_id, keyspace=world.keyspace)


def missing_tools(block: Block) -> List[str]:
    """kcat and cqlsh, when the block uses them and they are not installed (``make tools``)."""
    text = "\n".join(command.text for command in block.commands)
    missing = []
    if re.search(r"\bkcat\b", text) and shutil.which("kcat") is None:
        missing.append("kcat")
    has_cqlsh = (REPO / ".venv/bin/cqlsh").exists() or shutil.which("cqlsh") is not None
    if re.search(r"\bcqlsh\b", text) and not has_cqlsh:
        missing.append("cqlsh")
    return missing


def wait_idle(worker: Worker) -> None:
    """Until the ledger and the sink have consumed everything, as a reader pausing between sections would.

    Answers read from the database (cqlsh, event history) are then those of every
    operation sent before. Gives up quietly after IDLE_TIMEOUT_S: the block's
    answers then say what is missing.
    """
    settings = world_settings(worker)
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            lags = asyncio.run(read_lag(settings))
        except Exception:  # noqa: BLE001 - a topic not created yet or Kafka slow: read again
            lags = {}
        if lags and all(row.lag == 0 for rows in lags.values() for row in rows):
            return
        time.sleep(0.3)


def run_block(commands: List[str], env: Dict[str, str], outdir: Path) -> List[Optional[int]]:
    """Run the commands in one bash; their outputs are in ``outdir``. A status is None if it never ended."""
    path = outdir / "block.sh"
    path.write_text(script(commands, str(outdir)))
    process = subprocess.Popen(["bash", str(path)], cwd=REPO, env=env, start_new_session=True)
    try:
        process.wait(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    statuses: List[Optional[int]] = []
    for index in range(len(commands)):
        status_file = outdir / f"{index}.rc"
        statuses.append(int(status_file.read_text()) if status_file.exists() else None)
    return statuses


def read_outputs(outdir: Path, index: int) -> Tuple[str, str, bool]:
    """A command's stdout and stderr, and whether it started at all (bash creates its files first)."""
    out, err = outdir / f"{index}.out", outdir / f"{index}.err"
    if not out.exists():
        return "", "", False
    return out.read_text(errors="replace"), err.read_text(errors="replace") if err.exists() else "", True


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_readme_block(block: Block, page_workers: PageWorkers, tmp_path: Path) -> None:
    if block.skip:
        pytest.skip(f"opted out in {block.page}: {block.skip}")
    missing = missing_tools(block)
    if missing:
        message = f"{' and '.join(missing)} not installed (make tools installs them)"
        if os.environ.get("UBS_REQUIRE_KCAT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    readme_worker = page_workers.for_page(block.page)
    env = readme_worker.env()
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    names = names_of(readme_worker)
    run = [rewrite(command.text, names) for command in block.commands]
    wait_idle(readme_worker)
    statuses = run_block(run, env, tmp_path)
    outcomes = [
        Outcome(command, text, status, *read_outputs(tmp_path, index))
        for index, (command, text, status) in enumerate(zip(block.commands, run, statuses, strict=True))
    ]
    failures = [outcome.report(problem) for outcome in outcomes if (problem := outcome.problem(names))]
    if failures:
        header = f"{block.page} block at line {block.line} ({block.heading!r}):\n{block.source}\n"
        pytest.fail(header + "\n".join(failures), pytrace=False)
