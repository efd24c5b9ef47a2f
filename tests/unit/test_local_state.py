"""Discarding local table files: what goes and what stays."""

from __future__ import annotations

from pathlib import Path

from app.guards.local_state import (
    CLEAN_MARKER,
    Deliveries,
    discard_local_tables,
    mark_clean_shutdown,
    open_local_tables,
)


def test_every_store_under_the_table_dir_is_removed(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    (tables / "accounts-0.db").mkdir(parents=True)
    (tables / "accounts-0.db" / "000001.log").write_bytes(b"wal")
    (tables / "results-3.db").mkdir()
    (tables / "stray.lock").write_text("x")
    sibling = tmp_path / "v1" / "keep.txt"
    sibling.write_text("not a table")

    assert discard_local_tables(tables) == 3

    assert tables.is_dir()
    assert list(tables.iterdir()) == []
    assert sibling.read_text() == "not a table"


def test_a_missing_table_dir_is_nothing_to_discard(tmp_path: Path) -> None:
    assert discard_local_tables(tmp_path / "absent") == 0
    assert not (tmp_path / "absent").exists()


def test_a_symlinked_store_is_unlinked_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("data")
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "accounts-1.db").symlink_to(elsewhere, target_is_directory=True)

    assert discard_local_tables(tables) == 1

    assert (elsewhere / "precious").read_text() == "data"


def test_a_marked_directory_is_kept_once_and_the_mark_is_consumed(tmp_path: Path) -> None:
    store = tmp_path / "accounts-0.db"
    store.mkdir()
    mark_clean_shutdown(tmp_path)
    assert (tmp_path / CLEAN_MARKER).is_file()

    assert open_local_tables(tmp_path) is True
    assert store.is_dir()
    assert not (tmp_path / CLEAN_MARKER).exists()

    # The next start finds no mark (this life may have crashed) and discards.
    assert open_local_tables(tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_an_unmarked_directory_is_discarded(tmp_path: Path) -> None:
    (tmp_path / "results-2.db").mkdir()
    assert open_local_tables(tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_deliveries_are_acknowledged_only_when_every_send_completed() -> None:
    deliveries = Deliveries()
    assert deliveries.all_acknowledged
    deliveries.on_send_initiated(None, "t", None, 1, 1)
    deliveries.on_send_initiated(None, "t", None, 1, 1)
    deliveries.on_send_completed(None, None, None)
    assert not deliveries.all_acknowledged
    deliveries.on_send_completed(None, None, None)
    assert deliveries.all_acknowledged
    deliveries.on_send_initiated(None, "t", None, 1, 1)
    deliveries.on_send_error(None, RuntimeError("broker away"), None)
    assert not deliveries.all_acknowledged
