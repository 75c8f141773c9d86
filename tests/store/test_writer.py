"""Indexing's writes in a real database folder: upserts by id, removals, compaction, indexes (see test_embedders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.store.reader import StoreReader
from components.store.recovery import restore_readable
from components.store.schema import CROPS, EMBEDDINGS
from components.store.writer import StoreWriter
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord
from tests.records import crop, embedding, image


@pytest.fixture
def writer(tmp_path: Path) -> StoreWriter:
    return StoreWriter(str(tmp_path / "db"))


def test_writing_the_same_records_twice_leaves_the_same_rows(writer: StoreWriter) -> None:
    parent = image("a")
    child = crop(parent, "c1")
    for _ in range(2):
        writer.upsert_images([parent])
        writer.upsert_crops([child])
        writer.upsert_embeddings([embedding(parent, [1, 0, 0]), embedding(child, [0, 1, 0])], "m1")
    assert writer.counts() == {"images": 1, "crops": 1, "embeddings": 2}
    assert writer.images_by_id([parent.image_id]) == {parent.image_id: parent}
    assert writer.crops_by_id([child.crop_id]) == {child.crop_id: child}


def test_vector_rows_hold_each_records_columns_and_its_float32_vector_exactly(writer: StoreWriter) -> None:
    parent = image("a")
    children = [crop(parent, "c1", "cat", 0.25), crop(parent, "c2", "dog", 0.75)]
    batch = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)  # rows of one model batch
    records = [
        EmbeddingRecord.of_image(parent, batch[0], "m1", ["cat", "dog"]),
        *(EmbeddingRecord.of_crop(child, row, "m1") for child, row in zip(children, batch[1:], strict=True)),
    ]
    writer.upsert_embeddings(records, "m1")
    rows = {row["id"]: row for row in writer.vector_table_of("m1").to_arrow().to_pylist()}
    for record, row in zip(records, batch, strict=True):
        stored = rows[record.id]
        assert np.array_equal(np.asarray(stored.pop("vector"), dtype=np.float32), row)
        assert stored == record.model_dump(exclude={"vector"})


def test_upsert_updates_changed_fields(writer: StoreWriter) -> None:
    parent = image("a")
    writer.upsert_images([parent])
    writer.upsert_images([parent.model_copy(update={"caption": "new", "index_signature": "sig"})])
    assert writer.images_by_id([parent.image_id])[parent.image_id].index_signature == "sig"
    assert writer.counts()["images"] == 1


def test_remove_crops_except_drops_stale_crops_and_their_vectors(writer: StoreWriter) -> None:
    parent = image("a")
    old, kept = crop(parent, "old"), crop(parent, "kept")
    writer.upsert_crops([old, kept])
    writer.upsert_embeddings(
        [embedding(parent, [1, 0, 0]), embedding(old, [0, 1, 0]), embedding(kept, [0, 0, 1])], "m1"
    )
    removed = writer.remove_crops_except([parent.image_id], [kept.crop_id])
    assert removed == [old.uri]
    assert set(writer.crops_by_id([old.crop_id, kept.crop_id])) == {kept.crop_id}
    assert writer.counts() == {"images": 0, "crops": 1, "embeddings": 2}


def test_remove_images_drops_everything_derived(writer: StoreWriter) -> None:
    a, b = image("a"), image("b")
    child = crop(a, "c")
    writer.upsert_images([a, b])
    writer.upsert_crops([child])
    writer.upsert_embeddings([embedding(a, [1, 0, 0]), embedding(b, [0, 1, 0]), embedding(child, [0, 0, 1])], "m1")
    assert writer.image_ids_by_uri("t") == {a.uri: [a.image_id], b.uri: [b.image_id]}
    writer.remove_images([a.image_id])
    assert writer.counts() == {"images": 1, "crops": 0, "embeddings": 1}


def test_ids_are_checked_before_reaching_a_filter(writer: StoreWriter) -> None:
    writer.upsert_images([image("a")])
    with pytest.raises(ValueError, match="not a cropsearch id"):
        writer.images_by_id(["abc' OR 1=1"])


def test_the_index_remembers_where_its_embedder_came_from(writer: StoreWriter) -> None:
    assert writer.embedder_spec_of_index() is None
    writer.upsert_embeddings([embedding(image("a"), [1, 0, 0])], "m1", "/models/clip")
    assert writer.embedder_spec_of_index() == "/models/clip"


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_images_with_vectors(writer: StoreWriter, names: list[str], vectors: np.ndarray) -> list[ImageRecord]:
    images = [image(name) for name in names]
    writer.upsert_embeddings([embedding(i, v.tolist()) for i, v in zip(images, vectors, strict=True)], "m1")
    writer.upsert_images(images)
    return images


def test_compaction_merges_the_fragments_of_many_small_writes_and_keeps_every_row(writer: StoreWriter) -> None:
    for number in range(5):
        parent = image(f"photo-{number}")
        writer.upsert_images([parent])
        writer.upsert_crops([crop(parent, "a"), crop(parent, "b")])
    rows_before = writer.counts()
    assert writer.fragment_counts() == {"images": 5, "crops": 5}

    assert writer.compact() == {"images": (5, 1), "crops": (5, 1)}
    assert writer.counts() == rows_before
    assert writer.compact() == {"images": (1, 1), "crops": (1, 1)}  # nothing left to merge


def test_a_write_that_overruns_its_time_bound_fails_clearly_and_commits_nothing(tmp_path: Path) -> None:
    from datetime import timedelta

    from components.errors import StoreWriteTimeout

    writer = StoreWriter(str(tmp_path / "db"), write_timeout=timedelta(microseconds=1))
    with pytest.raises(StoreWriteTimeout, match=r"writing 2000 rows to images at .* did not finish"):
        writer.upsert_images([image(f"photo-{number}") for number in range(2000)])
    assert writer.counts()["images"] == 0


def test_the_ann_index_is_built_only_past_the_threshold_and_keeps_up_with_new_rows(writer: StoreWriter) -> None:
    reader = StoreReader(writer.uri)
    vectors = unit_vectors(600, 32, seed=0)
    write_images_with_vectors(writer, [f"p{n}" for n in range(600)], vectors)
    query = vectors[7]
    exact = [row["id"] for row in reader.search(query, "", 10)]

    # Words need their index at any size (text search has no exact fallback); vectors only past the threshold.
    assert writer.maintain_indexes(min_rows=1000) == ["built the text index over 600 embeddings of m1"]
    assert writer.maintain_indexes(min_rows=1000) == []
    built = writer.maintain_indexes(min_rows=500)
    assert built[0] == "built the vector index over 600 embeddings of m1"
    assert "indexed images.image_id" in built and "indexed embeddings.id" in built
    assert writer.maintain_indexes(min_rows=500) == []  # nothing new: nothing to do

    indexed = reader.search(query, "", 10)
    assert [row["id"] for row in indexed] == exact  # refined: same neighbours, same order
    assert indexed[0]["score"] == pytest.approx(1.0, abs=1e-5)  # and exact scores

    write_images_with_vectors(writer, [f"q{n}" for n in range(50)], unit_vectors(50, 32, seed=1))
    assert writer.maintain_indexes(min_rows=500) == [
        "added 50 new rows to the indexes of embeddings",
        "added 50 new rows to the indexes of images",
    ]
    assert writer.counts()["embeddings"] == 650


def test_an_index_built_before_a_scalar_index_was_added_gets_it_on_the_next_run(writer: StoreWriter) -> None:
    """Indexes made by earlier code had no index on embeddings.id ("more like this" scans 1M ids without it)
    and no text index (text and hybrid queries refuse to run without one)."""
    from lancedb.index import IvfHnswSq

    write_images_with_vectors(writer, [f"p{n}" for n in range(300)], unit_vectors(300, 32, seed=0))
    embeddings = writer._open(EMBEDDINGS)
    embeddings.create_index("vector", config=IvfHnswSq(distance_type="cosine"))  # as the earlier code left it
    assert writer.maintain_indexes(min_rows=100) == [
        "built the text index over 300 embeddings of m1",
        "indexed embeddings.id",
        "indexed images.image_id",
    ]
    assert {tuple(index.columns) for index in embeddings.list_indices()} == {("vector",), ("id",), ("class_names",)}
    assert writer.maintain_indexes(min_rows=100) == []


def test_a_table_a_kill_left_before_its_first_commit_is_made_anew(tmp_path: Path) -> None:
    """Issue 24's crash loop: SIGKILL while LanceDB created the images table left its folder with data and no
    version; LanceDB lists such a table but cannot open it, and every later run failed calling the index damaged."""
    parent = image("a")
    StoreWriter(str(tmp_path / "db")).upsert_crops([crop(parent, "c1")])  # the database exists, with crops
    unfinished = tmp_path / "db" / "images.lance"
    (unfinished / "data").mkdir(parents=True)
    (unfinished / "data" / "0123.lance").write_bytes(b"half a fragment")
    (unfinished / "_versions").mkdir()
    writer = StoreWriter(str(tmp_path / "db"))
    assert writer.images_by_id([parent.image_id]) == {}  # nothing of it was ever committed
    images, crops = StoreReader(str(tmp_path / "db")).records_of_hits([parent.image_id], [])
    assert images == {} and crops == {}  # a query meanwhile reads it as absent too
    assert [restored.table for restored in restore_readable(str(tmp_path / "db"))] == ["crops"]  # and `restore`
    writer.upsert_images([parent])
    assert writer.counts() == {"images": 1, "crops": 1, "embeddings": 0}
    assert StoreWriter(str(tmp_path / "db")).images_by_id([parent.image_id]) == {parent.image_id: parent}


def test_each_crop_is_a_row_of_its_own_however_many_its_photo_has(writer: StoreWriter) -> None:
    """Crops are upserted on their own id: on their photo's, a photo's crops would collapse or overwrite each other."""
    parent = image("a")
    children = [crop(parent, f"c{number}") for number in range(3)]
    ids = [child.crop_id for child in children]
    for _ in range(2):
        writer.upsert_crops(children)
    assert writer.counts()["crops"] == 3
    assert writer.crops_by_id(ids) == {child.crop_id: child for child in children}
    changed = children[0].model_copy(update={"uri": "/crops/again.jpg"})
    writer.upsert_crops([changed])  # one crop written again alone: its siblings stay as they were
    assert writer.crops_by_id(ids) == {child.crop_id: child for child in [changed, *children[1:]]}


@pytest.mark.parametrize(
    "bad",
    [
        "a" * 64 + "' OR 1=1 --",  # a whole id, then SQL: the check must hold to the end of the string
        "a" * 16 + "') OR ('1'='1",
        "A" * 64,  # sha256 hex is lowercase
        "a" * 15,
        "a" * 65,
        "",
    ],
)
def test_only_whole_lowercase_hex_ids_reach_a_filter(writer: StoreWriter, bad: str) -> None:
    writer.upsert_images([image("a")])
    with pytest.raises(ValueError, match="not a cropsearch id"):
        writer.images_by_id([image("a").image_id, bad])
    with pytest.raises(ValueError, match="not a cropsearch id"):
        writer.remove_images([bad])
    assert writer.counts()["images"] == 1


LEGACY_INDEX = Path(__file__).resolve().parents[1] / "data" / "legacy-index"


def _tile_of(parent: ImageRecord) -> CropRecord:
    return crop(parent, "tile").model_copy(
        update={"source": "tile", "detector": "tiles", "class_id": -1, "class_name": "", "confidence": 1.0}
    )


def test_crops_stored_before_region_sources_read_as_the_detectors_and_the_table_gains_the_column(
    tmp_path: Path,
) -> None:
    """The fixture's crops table has no `source` column (tests/data/make_legacy_index.py): reads as before,
    and the first crop written adds it, its older rows the detector's."""
    import shutil

    shutil.copytree(LEGACY_INDEX / "lancedb", tmp_path / "lancedb")
    store = StoreWriter(str(tmp_path / "lancedb"))
    table = store._open(CROPS)
    assert "source" not in table.schema.names
    old_ids = table.to_arrow().column("crop_id").to_pylist()
    old = store.crops_by_id(old_ids)
    assert {crop.source for crop in old.values()} == {"detector"} and store.class_names() == {"red", "green", "blue"}

    parent = store.images_by_id([next(iter(old.values())).image_id])
    tile = _tile_of(next(iter(parent.values())))
    store.upsert_crops([tile])
    rows = StoreWriter(store.uri)._open(CROPS).to_arrow().select(["crop_id", "source"]).to_pylist()
    sources = {row["crop_id"]: row["source"] for row in rows}
    assert sources == {**dict.fromkeys(old_ids, "detector"), tile.crop_id: "tile"}
    again = StoreWriter(store.uri)
    assert again.crops_by_id([*old_ids, tile.crop_id]) == {**old, tile.crop_id: tile}
    assert again.class_names() == {"red", "green", "blue"}  # the tile has no class to list


def test_a_crops_table_older_than_the_record_column_keeps_a_tiles_source_in_its_own_column(tmp_path: Path) -> None:
    """Such a table is read column by column: without the `source` column a tile would read as the detector's."""
    import lancedb
    import pyarrow as pa

    from components.store.schema import CROPS_SCHEMA

    parent = image("a")
    detected = crop(parent, "c1")
    oldest = pa.schema([field for field in CROPS_SCHEMA if field.name not in ("source", "record")])
    lancedb.connect(str(tmp_path / "db")).create_table(
        CROPS, pa.Table.from_pylist([detected.model_dump(exclude={"source"})], schema=oldest)
    )
    store = StoreWriter(str(tmp_path / "db"))
    assert store.crops_by_id([detected.crop_id]) == {detected.crop_id: detected}
    tile = _tile_of(parent)
    store.upsert_crops([tile])
    assert StoreWriter(store.uri).crops_by_id([detected.crop_id, tile.crop_id]) == {
        detected.crop_id: detected,
        tile.crop_id: tile,
    }
    assert [crop.source for crop in StoreReader(store.uri).crops_of_image(parent.image_id)] == ["detector", "tile"]


def test_vectors_stored_before_region_sources_gain_their_source_as_those_rows_can_only_have_been(
    tmp_path: Path,
) -> None:
    """Before the column, a crop with a class was the detector's and one without a tile; a photo has none.

    The column is added and filled on the first vector write; a run killed between adding and filling
    leaves crops without a source, which the next run's plan fills (`fill_region_sources`)."""
    import lancedb
    import pyarrow as pa

    from components.store.schema import embedding_table, embeddings_schema

    parent = image("a")
    named, tile = crop(parent, "c1"), _tile_of(parent)
    rows = [embedding(parent, [1, 0, 0]), embedding(named, [0, 1, 0]), embedding(tile, [0, 0, 1])]
    schema = embeddings_schema(3, "m1", "m1")
    older = pa.schema([field for field in schema if field.name != "source"], metadata=schema.metadata)
    lancedb.connect(str(tmp_path / "db")).create_table(EMBEDDINGS, embedding_table(rows, older))

    def sources() -> dict[str, str | None]:
        table = lancedb.connect(str(tmp_path / "db")).open_table(EMBEDDINGS).to_arrow()
        return dict(zip(table.column("id").to_pylist(), table.column("source").to_pylist(), strict=True))

    store = StoreWriter(str(tmp_path / "db"))
    assert StoreReader(store.uri).vectors_know_region_sources() is False
    proposal = crop(parent, "p").model_copy(update={"source": "proposal", "class_name": ""})
    store.upsert_embeddings([embedding(proposal, [1, 1, 0])], "m1")
    expected = {parent.image_id: None, named.crop_id: "detector", tile.crop_id: "tile", proposal.crop_id: "proposal"}
    assert sources() == expected
    assert StoreReader(store.uri).vectors_know_region_sources() is True

    # Killed between adding the column and filling it: the next plan fills what it left empty.
    table = lancedb.connect(str(tmp_path / "db")).open_table(EMBEDDINGS)
    table.update(where=f"id IN ('{named.crop_id}', '{tile.crop_id}')", values_sql={"source": "NULL"})
    StoreWriter(store.uri).fill_region_sources()
    assert sources() == expected
