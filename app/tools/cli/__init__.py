"""The operator's commands: ``ubscore <command>`` and ``faust -A app <command>`` alike.

They are Faust app commands, so they join Faust's own click group (``worker``,
``tables``...) that both entry points run; importing this package registers them
all. Each runs as a client (app.tools.cli.command: no Faust worker around it, any
failure one line on stderr with a non-zero status).

Settings come from the environment like a worker's (``UBS_`` names); flags
override what an operator may want to point elsewhere (``--worker URL``).

One module a group of commands, each readable alone:

- ``operations``: submit, account, tail (one user's operations and events);
- ``checks``: lag, verify (is the pipeline keeping up, do its invariants hold);
- ``workers``: workers (run N workers here under a supervisor);
- ``dead_letters``: dlq list, dlq replay;
- ``keys``: keys new (API keys for the gateway).
"""

from app.tools.cli import checks, dead_letters, keys, operations, workers

__all__ = ["checks", "dead_letters", "keys", "operations", "workers"]
