"""Which table partitions the recovery loads in bulk (app.frame.bulk_recovery), and the record shape it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import faust
from faust.types import TP

from app.frame.bulk_recovery import _Record, far_behind

A = TP("ubscore-accounts-changelog", 0)
B = TP("ubscore-accounts-changelog", 1)
C = TP("ubscore-results-changelog", 0)


def test_a_partition_is_loaded_in_bulk_when_enough_records_wait_beyond_its_offset() -> None:
    offsets: Dict[TP, Any] = {A: None, B: 4, C: -1}
    highwaters: Dict[TP, Any] = {A: 99, B: 99, C: 98}
    # A has nothing (100 records wait, from 0), B has up to 4 (95 wait, from 5), C has nothing (99 wait).
    assert far_behind([A, B, C], offsets, highwaters, minimum=100) == {A: 0}
    assert far_behind([A, B, C], offsets, highwaters, minimum=95) == {A: 0, B: 5, C: 0}
    assert far_behind([A], {A: 99}, {A: 99}, minimum=1) == {}  # up to date
    assert far_behind([A], {A: None}, {A: -1}, minimum=1) == {}  # an empty changelog
    assert far_behind([A], {}, {}, minimum=1) == {}  # offsets not known yet: Faust's recovery decides


def test_records_written_through_a_rocksdb_table_land_with_their_offset(tmp_path: Path) -> None:
    """The loader's records go through Table.apply_changelog_batch into Faust's RocksDB store, as they are."""
    app = faust.App("canary", broker="kafka://localhost:1", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("accounts", partitions=2, key_type=bytes, options={"driver": "rocksdict"})
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    batch = [_Record(tp, 5, b"k", b'{"seq":1}'), _Record(tp, 7, b"j", b"2"), _Record(tp, 8, b"j", None)]
    table.apply_changelog_batch(batch)  # type: ignore[arg-type]  # reads only event.message
    db = table.data._db_for_partition(1)  # type: ignore[attr-defined]  # noqa: SLF001 - what the store wrote
    assert table.persisted_offset(tp) == 8
    assert db.get(b"k") == b'{"seq":1}' and db.get(b"j") is None  # the last record of a key wins, None deletes
