"""LanceDB storage in a real database folder: upserts, filters, joins, embedder binding."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pytest

from components.errors import StoreMismatchError
from components.store.store import (
    CROPS,
    CROPS_SCHEMA,
    IMAGES,
    IMAGES_SCHEMA,
    RECORD,
    CropStore,
    search_filter,
    sql_string,
)
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord


def hex_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image(name: str) -> ImageRecord:
    return ImageRecord(image_id=hex_id(name), uri=f"/photos/{name}.jpg", source="t", width=100, height=50, num_bytes=9)


def crop(parent: ImageRecord, name: str, class_name: str = "cat", confidence: float = 0.5) -> CropRecord:
    return CropRecord(
        crop_id=hex_id(parent.image_id + name),
        image_id=parent.image_id,
        detector="det",
        class_id=0,
        class_name=class_name,
        confidence=confidence,
        x1=1,
        y1=2,
        x2=30,
        y2=40,
        area_fraction=0.2,
        uri=f"/crops/{name}.jpg",
    )


def embedding(record: ImageRecord | CropRecord, vector: list[float], model: str = "m1") -> EmbeddingRecord:
    if isinstance(record, ImageRecord):
        return EmbeddingRecord.of_image(record, vector, model, class_names=[])
    return EmbeddingRecord.of_crop(record, vector, model)


@pytest.fixture
def store(tmp_path: Path) -> CropStore:
    return CropStore(str(tmp_path / "db"))


def test_writing_the_same_records_twice_leaves_the_same_rows(store: CropStore) -> None:
    parent = image("a")
    child = crop(parent, "c1")
    for _ in range(2):
        store.upsert_images([parent])
        store.upsert_crops([child])
        store.upsert_embeddings([embedding(parent, [1, 0, 0]), embedding(child, [0, 1, 0])], "m1")
    assert store.counts() == {"images": 1, "crops": 1, "embeddings": 2}
    assert store.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert store.crops_by_id([child.crop_id]) == {child.crop_id: child}


def test_upsert_updates_changed_fields(store: CropStore) -> None:
    parent = image("a")
    store.upsert_images([parent])
    store.upsert_images([parent.model_copy(update={"caption": "new", "index_signature": "sig"})])
    assert store.images_by_id([parent.image_id])[parent.image_id].index_signature == "sig"
    assert store.counts()["images"] == 1


def test_vectors_of_another_embedder_are_refused(store: CropStore) -> None:
    parent = image("a")
    store.upsert_embeddings([embedding(parent, [1, 0, 0])], "m1")
    with pytest.raises(StoreMismatchError, match="holds vectors of embedder 'm1', not 'm2'"):
        store.upsert_embeddings([embedding(parent, [1, 0, 0], model="m2")], "m2")
    with pytest.raises(StoreMismatchError):
        store.check_embedder("m2")
    store.check_embedder("m1")
    assert store.embedder_of_index() == "m1"


def test_search_prefilters_in_lancedb_and_scores_by_cosine(store: CropStore) -> None:
    parent = image("a")
    cat, dog = crop(parent, "cat", "cat", 0.9), crop(parent, "dog", "dog", 0.3)
    whole = embedding(parent, [1, 0, 0]).model_copy(update={"class_names": ["cat", "dog"]})
    store.upsert_embeddings([whole, embedding(cat, [0.6, 0.8, 0]), embedding(dog, [0, 1, 0])], "m1")
    query = np.array([1, 0, 0], dtype=np.float32)
    rows = store.search(query, "", 10)
    assert [row["id"] for row in rows] == [parent.image_id, cat.crop_id, dog.crop_id]
    assert rows[0]["score"] == pytest.approx(1.0) and rows[1]["score"] == pytest.approx(0.6)
    crops_only = store.search(query, search_filter("crop", [], 0.0, 0.0), 10)
    assert [row["id"] for row in crops_only] == [cat.crop_id, dog.crop_id]
    dogs = store.search(query, search_filter("both", ["dog"], 0.0, 0.0), 10)
    assert [row["id"] for row in dogs] == [parent.image_id, dog.crop_id]  # the whole image contains a dog
    confident = store.search(query, search_filter("crop", [], 0.5, 0.0), 10)
    assert [row["id"] for row in confident] == [cat.crop_id]
    assert store.search(query, search_filter("both", [], 0.0, 0.5), 10)[0]["kind"] == "image"


def test_user_strings_cannot_break_out_of_a_filter(store: CropStore) -> None:
    parent = image("a")
    store.upsert_embeddings([embedding(crop(parent, "c", "cat"), [1, 0, 0])], "m1")
    hostile = "x' OR 1=1 --"
    assert sql_string(hostile) == "'x'' OR 1=1 --'"
    assert store.search(np.array([1, 0, 0]), search_filter("both", [hostile], 0.0, 0.0), 10) == []
    assert len(store.search(np.array([1, 0, 0]), search_filter("both", ["cat"], 0.0, 0.0), 10)) == 1


def test_remove_crops_except_drops_stale_crops_and_their_vectors(store: CropStore) -> None:
    parent = image("a")
    old, kept = crop(parent, "old"), crop(parent, "kept")
    store.upsert_crops([old, kept])
    store.upsert_embeddings([embedding(parent, [1, 0, 0]), embedding(old, [0, 1, 0]), embedding(kept, [0, 0, 1])], "m1")
    removed = store.remove_crops_except([parent.image_id], [kept.crop_id])
    assert removed == [old.uri]
    assert set(store.crops_by_id([old.crop_id, kept.crop_id])) == {kept.crop_id}
    assert store.counts() == {"images": 0, "crops": 1, "embeddings": 2}


def test_remove_images_drops_everything_derived(store: CropStore) -> None:
    a, b = image("a"), image("b")
    child = crop(a, "c")
    store.upsert_images([a, b])
    store.upsert_crops([child])
    store.upsert_embeddings([embedding(a, [1, 0, 0]), embedding(b, [0, 1, 0]), embedding(child, [0, 0, 1])], "m1")
    assert store.image_ids_by_uri("t") == {a.uri: [a.image_id], b.uri: [b.image_id]}
    store.remove_images([a.image_id])
    assert store.counts() == {"images": 1, "crops": 0, "embeddings": 1}


def test_reads_see_tables_and_rows_written_after_the_first_read(store: CropStore) -> None:
    first, later = image("a"), image("b")
    child = crop(later, "c")
    assert store.records_of_hits([first.image_id], [child.crop_id]) == ({}, {})  # no tables yet
    store.upsert_embeddings([embedding(first, [1, 0, 0])], "m1")
    store.upsert_images([first])
    assert [row["id"] for row in store.search(np.array([0, 1, 0]), "", 5)] == [first.image_id]

    another_process = CropStore(store.uri)
    another_process.upsert_crops([child])
    another_process.upsert_images([later])
    another_process.upsert_embeddings([embedding(child, [0, 1, 0])], "m1")
    images, crops = store.records_of_hits([first.image_id, later.image_id], [child.crop_id])
    assert images == {first.image_id: first, later.image_id: later}
    assert crops == {child.crop_id: child}
    assert store.search(np.array([0, 1, 0]), "", 5)[0]["id"] == child.crop_id


def test_a_lookup_of_more_ids_than_one_filter_holds_returns_every_row(store: CropStore) -> None:
    images = [image(f"p{n}") for n in range(1234)]  # three IN lists of at most 500
    store.upsert_images(images)
    ids = [record.image_id for record in images]
    assert store.images_by_id(ids) == {record.image_id: record for record in images}
    assert store.records_of_hits(ids, []) == ({record.image_id: record for record in images}, {})


def test_lookups_give_back_exactly_the_records_written(store: CropStore) -> None:
    parent = image("a").model_copy(update={"indexed_at": datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=UTC)})
    child = crop(parent, "c", confidence=0.1 + 0.2).model_copy(update={"x1": 1 / 3})
    store.upsert_images([parent])
    store.upsert_crops([child])
    assert store.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert store.crops_by_id([child.crop_id]) == {child.crop_id: child}
    assert store.records_of_hits([parent.image_id], [child.crop_id]) == (
        {parent.image_id: parent},
        {child.crop_id: child},
    )
    # The typed columns hold the same values as the record column, for filters and SQL readers.
    (row,) = lancedb.connect(store.uri).open_table(CROPS).to_arrow().to_pylist()
    assert CropRecord.model_validate_json(row.pop(RECORD)) == CropRecord.model_validate(row) == child


def test_tables_made_before_the_record_column_are_read_and_written_column_by_column(tmp_path: Path) -> None:
    database = lancedb.connect(str(tmp_path / "db"))
    for name, schema in ((IMAGES, IMAGES_SCHEMA), (CROPS, CROPS_SCHEMA)):
        database.create_table(name, schema=schema.remove(schema.get_field_index(RECORD)))
    store = CropStore(str(tmp_path / "db"))
    parent, child = image("a"), crop(image("a"), "c")
    for _ in range(2):
        store.upsert_images([parent])
        store.upsert_crops([child])
    assert store.counts()["images"] == store.counts()["crops"] == 1
    assert store.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert store.crops_by_id([child.crop_id]) == {child.crop_id: child}
    assert store.records_of_hits([parent.image_id], [child.crop_id]) == (
        {parent.image_id: parent},
        {child.crop_id: child},
    )


def test_ids_are_checked_before_reaching_a_filter(store: CropStore) -> None:
    store.upsert_images([image("a")])
    with pytest.raises(ValueError, match="not a cropsearch id"):
        store.images_by_id(["abc' OR 1=1"])


def test_searching_an_empty_database_says_to_index_first(store: CropStore) -> None:
    with pytest.raises(StoreMismatchError, match="run `cropsearch index` first"):
        store.search(np.array([1, 0, 0]), "", 5)


def test_the_index_remembers_where_its_embedder_came_from(store: CropStore) -> None:
    assert store.embedder_spec_of_index() is None
    store.upsert_embeddings([embedding(image("a"), [1, 0, 0])], "m1", "/models/clip")
    assert store.embedder_spec_of_index() == "/models/clip"


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_images_with_vectors(store: CropStore, names: list[str], vectors: np.ndarray) -> list[ImageRecord]:
    images = [image(name) for name in names]
    store.upsert_embeddings([embedding(i, v.tolist()) for i, v in zip(images, vectors, strict=True)], "m1")
    store.upsert_images(images)
    return images


def test_the_ann_index_is_built_only_past_the_threshold_and_keeps_up_with_new_rows(store: CropStore) -> None:
    vectors = unit_vectors(600, 32, seed=0)
    write_images_with_vectors(store, [f"p{n}" for n in range(600)], vectors)
    query = vectors[7]
    exact = [row["id"] for row in store.search(query, "", 10)]

    assert store.maintain_indexes(min_rows=1000) == []
    built = store.maintain_indexes(min_rows=500)
    assert built[0] == "built the vector index over 600 embeddings"
    assert "indexed images.image_id" in built
    assert store.maintain_indexes(min_rows=500) == []  # nothing new: nothing to do

    indexed = store.search(query, "", 10)
    assert [row["id"] for row in indexed] == exact  # refined: same neighbours, same order
    assert indexed[0]["score"] == pytest.approx(1.0, abs=1e-5)  # and exact scores

    write_images_with_vectors(store, [f"q{n}" for n in range(50)], unit_vectors(50, 32, seed=1))
    assert store.maintain_indexes(min_rows=500) == [
        "added 50 new rows to the indexes of embeddings",
        "added 50 new rows to the indexes of images",
    ]
    assert store.counts()["embeddings"] == 650


def test_compaction_merges_the_fragments_of_many_small_writes_and_keeps_every_row(store: CropStore) -> None:
    for number in range(5):
        parent = image(f"photo-{number}")
        store.upsert_images([parent])
        store.upsert_crops([crop(parent, "a"), crop(parent, "b")])
    rows_before = store.counts()
    assert store.fragment_counts() == {"images": 5, "crops": 5}

    assert store.compact() == {"images": (5, 1), "crops": (5, 1)}
    assert store.counts() == rows_before
    assert store.compact() == {"images": (1, 1), "crops": (1, 1)}  # nothing left to merge


def test_a_write_that_overruns_its_time_bound_fails_clearly_and_commits_nothing(tmp_path: Path) -> None:
    from datetime import timedelta

    from components.errors import StoreWriteTimeout

    store = CropStore(str(tmp_path / "db"), write_timeout=timedelta(microseconds=1))
    with pytest.raises(StoreWriteTimeout, match=r"writing 2000 rows to images at .* did not finish"):
        store.upsert_images([image(f"photo-{number}") for number in range(2000)])
    assert store.counts()["images"] == 0
