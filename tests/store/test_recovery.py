"""A damaged data file: an error naming the table and the way back, and `cropsearch restore` taking it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.errors import StoreCorruptError
from components.store.recovery import restore_readable
from components.store.schema import CROPS
from components.store.writer import StoreWriter
from flows.cli import main
from tests.records import crop, embedding, image


def write_chunk(store: StoreWriter, name: str) -> None:
    """One chunk as the pipeline writes it: crops, then vectors, then the image row that marks it indexed."""
    parent = image(name)
    child = crop(parent, f"{name}-c")
    store.upsert_crops([child])
    store.upsert_embeddings([embedding(parent, [1, 0, 0]), embedding(child, [0, 1, 0])], "m1")
    store.upsert_images([parent])
    time.sleep(0.05)  # versions of one chunk and the next get distinct times


def damage_newest_data_file(db: Path, table: str) -> None:
    newest = max((db / f"{table}.lance" / "data").iterdir(), key=lambda path: path.stat().st_mtime_ns)
    newest.write_bytes(b"garbage")


def test_a_damaged_table_is_named_with_the_command_that_restores_it(tmp_path: Path) -> None:
    db = tmp_path / "db"
    store = StoreWriter(str(db))
    for name in ("a", "b"):
        write_chunk(store, name)
    damage_newest_data_file(db, CROPS)

    with pytest.raises(StoreCorruptError, match=rf"table 'crops' of the index at {db} cannot be read") as named:
        StoreWriter(str(db)).crops_by_id([crop(image("b"), "b-c").crop_id])
    assert f"cropsearch restore --db {db}" in str(named.value)

    result = CliRunner().invoke(main, ["restore", "--db", str(db)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:4]}
    assert rows["crops"][-3:] == ["unreadable", "->", "1"]
    # All three went back to the moment before chunk b's crops: b is no longer marked indexed, so
    # the next index run redoes it, and every image marked indexed still has its crops and vectors.
    reopened = StoreWriter(str(db))
    assert reopened.damaged_tables() == []
    assert set(reopened.images_by_id([image("a").image_id, image("b").image_id])) == {image("a").image_id}
    assert reopened.counts() == {"images": 1, "crops": 1, "embeddings": 2}
    assert "nothing to restore" in CliRunner().invoke(main, ["restore", "--db", str(db)]).output


def test_restoring_an_intact_database_changes_nothing(tmp_path: Path) -> None:
    store = StoreWriter(str(tmp_path / "db"))
    write_chunk(store, "a")
    report = restore_readable(str(tmp_path / "db"))
    assert all(item.restored == item.latest and item.rows_before == item.rows_after for item in report)
