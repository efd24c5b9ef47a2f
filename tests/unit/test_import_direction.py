"""Imports under app/ go one way: down the layers below, never up.

The rule: a module may import a module of its own layer or of a lower one, never one
of a higher layer. Every import counts, at module level or inside a function, absolute
(``from app.x import y``, ``import app.x``) or relative. A module's layer is that of
the longest prefix of its dotted name in LAYERS. The test reads the sources with
``ast`` and imports nothing.

Folders say their direction: ``app/frame`` is what the Faust app is built from (below
``app.faust_app``, which imports it); ``app/guards`` holds the timers and services that
run on the app (above it). An import that must break the rule is listed in EXCEPTIONS
with a one-line reason; there are none.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

#: Module path prefix -> layer, lowest first.
LAYERS: Dict[str, int] = {
    # 0: imports nothing of app.
    "app.errors": 0,
    "app.exit_codes": 0,
    # 1: the pure ledger.
    "app.core": 1,
    # 2: base modules.
    "app.settings": 2,
    "app.backoff": 2,
    "app.partitioning": 2,
    "app.kafka_clients": 2,
    "app.topic_reader": 2,
    "app.frame.faust_internals": 2,  # imports nothing of app; topic_reader and consumer_lag read Kafka through it
    "app.guards.stalls": 2,  # the watches' plain decisions, no I/O; metrics names its actions
    # 3: metrics, logs, lag.
    "app.observability": 3,
    # 4: what the Faust app is built from; the gateway's pieces app.faust_app configures its web server with.
    "app.frame": 4,
    "app.web.access": 4,
    "app.web.auth": 4,
    "app.web.limits": 4,
    "app.web.peers": 4,
    "app.web.tls": 4,
    # 5: the app object.
    "app.faust_app": 5,
    # 6, 7: declared on the app.
    "app.topics": 6,
    "app.tables": 7,
    # 8: what runs on the app.
    "app.agents": 8,
    "app.sink": 8,
    "app.web": 8,
    "app.guards": 8,
    # 9: the operator's commands (registered on the app, loaded by the worker).
    "app.tools": 9,
    # 10: assembles everything.
    "app.worker": 10,
    # 11: the entry points (``app.app`` and ``python -m app``).
    "app.__main__": 11,
    "app": 11,
}

#: (importing module, imported module) -> why the import may go up. Keep it empty.
EXCEPTIONS: Dict[Tuple[str, str], str] = {}

ROOT = Path(__file__).resolve().parents[2]


def modules() -> Dict[str, Path]:
    """Every module under app/, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((ROOT / "app").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} has no layer: add its prefix to LAYERS"
    return LAYERS[max(prefixes, key=len)]


def imports(module: str, path: Path, known: Dict[str, Path]) -> Iterator[Tuple[str, int]]:
    """The modules of app/ that ``module`` imports, with the line of each import."""

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "app" or name.startswith("app."):
                yield resolve(name), node.lineno


def upward_imports() -> List[str]:
    known = modules()
    found = []
    for module, path in known.items():
        for target, line in sorted(set(imports(module, path, known))):
            if layer(target) > layer(module) and (module, target) not in EXCEPTIONS:
                found.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} (layer {layer(module)}) "
                    f"imports {target} (layer {layer(target)})"
                )
    return found


def test_no_import_goes_up_a_layer() -> None:
    upward = upward_imports()
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_every_exception_is_still_needed() -> None:
    known = modules()
    used = {(m, t) for m, p in known.items() for t, _ in imports(m, p, known)}
    assert not set(EXCEPTIONS) - used, f"exceptions no import needs: {sorted(set(EXCEPTIONS) - used)}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """An app.frame module importing the app object is caught."""
    source = tmp_path / "consume_loop.py"
    source.write_text("def f():\n    from app.faust_app import app\n")
    known = dict(modules(), **{"app.frame.consume_loop": source})
    found = list(imports("app.frame.consume_loop", source, known))
    assert ("app.faust_app", 2) in found
    assert layer("app.faust_app") > layer("app.frame.consume_loop")
