"""The query path's reads in a real database folder: prefiltered search, cosine scores, joins by id."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pytest

from components.errors import StoreMismatchError
from components.store.reader import StoreReader
from components.store.schema import CROPS, CROPS_SCHEMA, IMAGES, IMAGES_SCHEMA, RECORD, search_filter, sql_string
from components.store.writer import StoreWriter
from schemas.records import CropRecord
from tests.records import crop, embedding, image


@pytest.fixture
def writer(tmp_path: Path) -> StoreWriter:
    return StoreWriter(str(tmp_path / "db"))


@pytest.fixture
def reader(writer: StoreWriter) -> StoreReader:
    return StoreReader(writer.uri)


def test_search_prefilters_in_lancedb_and_scores_by_cosine(writer: StoreWriter, reader: StoreReader) -> None:
    parent = image("a")
    cat, dog = crop(parent, "cat", "cat", 0.9), crop(parent, "dog", "dog", 0.3)
    whole = embedding(parent, [1, 0, 0]).model_copy(update={"class_names": ["cat", "dog"]})
    writer.upsert_embeddings([whole, embedding(cat, [0.6, 0.8, 0]), embedding(dog, [0, 1, 0])], "m1")
    query = np.array([1, 0, 0], dtype=np.float32)
    rows = reader.search(query, "", 10)
    assert [row["id"] for row in rows] == [parent.image_id, cat.crop_id, dog.crop_id]
    assert rows[0]["score"] == pytest.approx(1.0) and rows[1]["score"] == pytest.approx(0.6)
    crops_only = reader.search(query, search_filter("crop", [], 0.0, 0.0), 10)
    assert [row["id"] for row in crops_only] == [cat.crop_id, dog.crop_id]
    dogs = reader.search(query, search_filter("both", ["dog"], 0.0, 0.0), 10)
    assert [row["id"] for row in dogs] == [dog.crop_id]  # a class keeps its crops, not the photos that hold one
    confident = reader.search(query, search_filter("crop", [], 0.5, 0.0), 10)
    assert [row["id"] for row in confident] == [cat.crop_id]
    large = reader.search(query, search_filter("both", [], 0.0, 0.5), 10)
    assert [row["id"] for row in large] == [parent.image_id]  # a whole image covers all of itself; crops less
    either = reader.search(query, search_filter("crop", ["dog", "cat"], 0.0, 0.0), 10)
    assert [row["id"] for row in either] == [cat.crop_id, dog.crop_id]


def test_user_strings_cannot_break_out_of_a_filter(writer: StoreWriter, reader: StoreReader) -> None:
    parent = image("a")
    writer.upsert_embeddings([embedding(crop(parent, "c", "cat"), [1, 0, 0])], "m1")
    hostile = "x' OR 1=1 --"
    assert sql_string(hostile) == "'x'' OR 1=1 --'"
    assert reader.search(np.array([1, 0, 0]), search_filter("both", [hostile], 0.0, 0.0), 10) == []
    assert len(reader.search(np.array([1, 0, 0]), search_filter("both", ["cat"], 0.0, 0.0), 10)) == 1


def test_reads_see_tables_and_rows_written_after_the_first_read(writer: StoreWriter, reader: StoreReader) -> None:
    first, later = image("a"), image("b")
    child = crop(later, "c")
    assert reader.records_of_hits([first.image_id], [child.crop_id]) == ({}, {})  # no tables yet
    writer.upsert_embeddings([embedding(first, [1, 0, 0])], "m1")
    writer.upsert_images([first])
    assert [row["id"] for row in reader.search(np.array([0, 1, 0]), "", 5)] == [first.image_id]

    another_process = StoreWriter(writer.uri)
    another_process.upsert_crops([child])
    another_process.upsert_images([later])
    another_process.upsert_embeddings([embedding(child, [0, 1, 0])], "m1")
    images, crops = reader.records_of_hits([first.image_id, later.image_id], [child.crop_id])
    assert images == {first.image_id: first, later.image_id: later}
    assert crops == {child.crop_id: child}
    assert reader.search(np.array([0, 1, 0]), "", 5)[0]["id"] == child.crop_id


def test_a_lookup_of_more_ids_than_one_filter_holds_returns_every_row(writer: StoreWriter, reader: StoreReader) -> None:
    images = [image(f"p{n}") for n in range(1234)]  # three IN lists of at most 500
    writer.upsert_images(images)
    ids = [record.image_id for record in images]
    assert writer.images_by_id(ids) == {record.image_id: record for record in images}
    assert reader.records_of_hits(ids, []) == ({record.image_id: record for record in images}, {})


def test_lookups_give_back_exactly_the_records_written(writer: StoreWriter, reader: StoreReader) -> None:
    parent = image("a").model_copy(update={"indexed_at": datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=UTC)})
    child = crop(parent, "c", confidence=0.1 + 0.2).model_copy(update={"x1": 1 / 3})
    writer.upsert_images([parent])
    writer.upsert_crops([child])
    assert writer.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert writer.crops_by_id([child.crop_id]) == {child.crop_id: child}
    assert reader.records_of_hits([parent.image_id], [child.crop_id]) == (
        {parent.image_id: parent},
        {child.crop_id: child},
    )
    # The typed columns hold the same values as the record column, for filters and SQL readers.
    (row,) = lancedb.connect(writer.uri).open_table(CROPS).to_arrow().to_pylist()
    assert CropRecord.model_validate_json(row.pop(RECORD)) == CropRecord.model_validate(row) == child


def test_tables_made_before_the_record_column_are_read_and_written_column_by_column(tmp_path: Path) -> None:
    database = lancedb.connect(str(tmp_path / "db"))
    for name, schema in ((IMAGES, IMAGES_SCHEMA), (CROPS, CROPS_SCHEMA)):
        database.create_table(name, schema=schema.remove(schema.get_field_index(RECORD)))
    writer, reader = StoreWriter(str(tmp_path / "db")), StoreReader(str(tmp_path / "db"))
    parent, child = image("a"), crop(image("a"), "c")
    for _ in range(2):
        writer.upsert_images([parent])
        writer.upsert_crops([child])
    assert writer.counts()["images"] == writer.counts()["crops"] == 1
    assert writer.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert writer.crops_by_id([child.crop_id]) == {child.crop_id: child}
    assert reader.records_of_hits([parent.image_id], [child.crop_id]) == (
        {parent.image_id: parent},
        {child.crop_id: child},
    )


def test_searching_an_empty_database_says_to_index_first(reader: StoreReader) -> None:
    with pytest.raises(StoreMismatchError, match="run `cropsearch index` first"):
        reader.search(np.array([1, 0, 0]), "", 5)


# Names that close a literal, hold quotes already doubled or several quotes, or a backslash: sql_string must
# double every quote, not the first only, and change nothing else.
QUOTED_NAMES = (
    "it's",
    "o'neil's 'cat'",
    "x' OR 1=1 --",
    "''",
    "a'' OR ''='",
    "back\\slash'",
    "'); DROP TABLE crops; --",
)


def test_class_names_and_sources_holding_quotes_filter_exactly_their_own_rows(
    writer: StoreWriter, reader: StoreReader
) -> None:
    parent = image("a")
    children = {name: crop(parent, f"c{number}", name) for number, name in enumerate(QUOTED_NAMES)}
    writer.upsert_embeddings([embedding(child, [1, 0, 0]) for child in children.values()], "m1")
    query = np.array([1, 0, 0], dtype=np.float32)
    for name, child in children.items():
        found = reader.search(query, search_filter("crop", [name], 0.0, 0.0), 10)
        assert [row["id"] for row in found] == [child.crop_id], name
    assert len(reader.search(query, search_filter("crop", list(QUOTED_NAMES), 0.0, 0.0), 10)) == len(QUOTED_NAMES)
    assert reader.search(query, search_filter("crop", ["it"], 0.0, 0.0), 10) == []

    photos = [image(name).model_copy(update={"source": name}) for name in QUOTED_NAMES]
    writer.upsert_images(photos)
    for photo in photos:  # a source reaches its filter the same way
        assert writer.image_ids_by_uri(photo.source) == {photo.uri: [photo.image_id]}, photo.source


def test_the_minimum_confidence_and_area_keep_a_row_exactly_at_them(writer: StoreWriter, reader: StoreReader) -> None:
    """Both are minimums ("at least"): the row at the value is in, the one just under it out."""
    parent = image("a")
    at = crop(parent, "at", confidence=0.5).model_copy(update={"area_fraction": 0.25})
    under = crop(parent, "under", confidence=0.4999).model_copy(update={"area_fraction": 0.2499})
    writer.upsert_embeddings([embedding(at, [1, 0, 0]), embedding(under, [1, 0, 0])], "m1")
    query = np.array([1, 0, 0], dtype=np.float32)
    assert [row["id"] for row in reader.search(query, search_filter("crop", [], 0.5, 0.0), 10)] == [at.crop_id]
    assert [row["id"] for row in reader.search(query, search_filter("crop", [], 0.0, 0.25), 10)] == [at.crop_id]


def test_a_region_source_filter_keeps_those_sources_crops_and_every_whole_photo(
    writer: StoreWriter, reader: StoreReader
) -> None:
    parent = image("a")
    named = crop(parent, "cat", "cat")
    unnamed = {
        source: crop(parent, source, "").model_copy(update={"source": source, "confidence": 1.0})
        for source in ("proposal", "tile")
    }
    rows = [embedding(parent, [1, 0, 0]), embedding(named, [0.9, 0.1, 0])]
    rows += [embedding(record, [0.8, 0.2, 0]) for record in unnamed.values()]
    writer.upsert_embeddings(rows, "m1")
    query = np.array([1, 0, 0], dtype=np.float32)

    def found(*sources: str) -> set[str]:
        return {row["id"] for row in reader.search(query, search_filter("both", [], 0.0, 0.0, sources), 10)}

    assert found() == {parent.image_id, named.crop_id, unnamed["proposal"].crop_id, unnamed["tile"].crop_id}
    assert found("proposal") == {parent.image_id, unnamed["proposal"].crop_id}
    assert found("detector", "tile") == {parent.image_id, named.crop_id, unnamed["tile"].crop_id}
    assert found("x') OR (1=1") == {parent.image_id}  # quoted like any user string
