"""docs/security-acls.md lists the ACLs of stack/secure/acls.txt, the file the secured stack applies.

The file is the one place the grants are written; the document's table between its
``acls`` markers must hold exactly the file's ``deploy`` lines, in the file's order.
The producer principal must never be able to write anything but the operations topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[2]
ACLS = REPO / "stack" / "secure" / "acls.txt"
DOC = REPO / "docs" / "security-acls.md"
BEGIN, END = "<!-- acls:begin -->", "<!-- acls:end -->"

Grant = Tuple[str, str, str, str, Tuple[str, ...]]


def file_grants(scope: str) -> List[Grant]:
    grants = []
    for line in ACLS.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        assert len(words) == 6, f"acls.txt: six columns expected: {line!r}"
        if words[0] == scope:
            principal, resource, pattern, name, operations = words[1:]
            grants.append((principal, resource, pattern, name, tuple(operations.split(","))))
    return grants


def doc_grants() -> List[Grant]:
    table = DOC.read_text(encoding="utf-8").split(BEGIN, 1)[1].split(END, 1)[0]
    rows = [line for line in table.strip().splitlines()[2:] if line.strip()]
    grants = []
    for row in rows:
        cells = [cell.strip().strip("`") for cell in row.strip().strip("|").split("|")]
        principal, resource, pattern, name, operations = cells
        grants.append((principal, resource, pattern, name, tuple(op.strip() for op in operations.split(","))))
    return grants


def test_the_document_lists_every_deploy_grant_of_the_file_and_nothing_else() -> None:
    assert doc_grants() == file_grants("deploy")


def test_every_line_of_the_file_is_deploy_or_dev() -> None:
    assert len(file_grants("deploy")) + len(file_grants("dev")) == sum(
        1 for line in ACLS.read_text(encoding="utf-8").splitlines() if line.split() and not line.startswith("#")
    )


def test_the_producer_may_write_the_operations_topic_and_nothing_else() -> None:
    grants = [grant for grant in file_grants("deploy") + file_grants("dev") if grant[0] == "producer"]
    writes = [grant for grant in grants if "Write" in grant[4] or "All" in grant[4]]
    assert [(resource, pattern, name) for _, resource, pattern, name, _ in writes] == [
        ("topic", "literal", "balance.operations")
    ]
    assert all(set(grant[4]) <= {"Write", "Describe", "IdempotentWrite"} for grant in grants)
