"""Several embedders in one index: a vector table each, a default, switching and dropping, and older indexes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from components.errors import StoreMismatchError
from components.store.reader import StoreReader
from components.store.schema import EMBEDDINGS, added_vector_table
from components.store.writer import StoreWriter
from schemas.records import ImageRecord
from tests.records import crop, embedding, image

LEGACY_INDEX = Path(__file__).resolve().parents[1] / "data" / "legacy-index"


@pytest.fixture
def writer(tmp_path: Path) -> StoreWriter:
    return StoreWriter(str(tmp_path / "db"))


def two_embedders(writer: StoreWriter) -> tuple[ImageRecord, ImageRecord]:
    """Photos a (one crop) and b, embedded by m1 (3-d) and m2 (4-d)."""
    a, b = image("a"), image("b")
    child = crop(a, "c")
    writer.upsert_images([a, b])
    writer.upsert_crops([child])
    writer.upsert_embeddings([embedding(a, [1, 0, 0]), embedding(b, [0, 1, 0]), embedding(child, [0, 0, 1])], "m1")
    m2 = [embedding(a, [1, 0, 0, 0], "m2"), embedding(b, [0, 1, 0, 0], "m2"), embedding(child, [0, 0, 0, 1], "m2")]
    writer.upsert_embeddings(m2, "m2", "/models/m2")
    return a, b


def test_each_embedder_has_its_own_table_and_the_first_is_the_default(writer: StoreWriter) -> None:
    two_embedders(writer)
    assert writer.vector_tables() == {"m1": EMBEDDINGS, "m2": added_vector_table("m2")}
    listed = {held.embedder: held for held in writer.indexed_embedders()}
    assert (listed["m1"].dim, listed["m1"].vectors, listed["m1"].default) == (3, 3, True)
    assert (listed["m2"].dim, listed["m2"].vectors, listed["m2"].default, listed["m2"].spec) == (
        4,
        3,
        False,
        "/models/m2",
    )
    assert writer.default_embedder() == "m1" and writer.embedder_spec_of_index() == "m1"
    # A reader searches the embedder it is given, the default without one: the 4-d vector fits m2 alone.
    assert StoreReader(writer.uri, embedder_id="m2").search(np.array([0, 0, 0, 1.0]), "", 1)[0]["kind"] == "crop"
    assert StoreReader(writer.uri).search(np.array([0, 1.0, 0]), "", 1)[0]["image_id"] == image("b").image_id


def test_an_embedder_writes_only_its_own_vectors_at_its_own_width(writer: StoreWriter) -> None:
    a, _ = two_embedders(writer)
    with pytest.raises(StoreMismatchError, match="another embedder than 'm1'"):
        writer.upsert_embeddings([embedding(a, [1, 0, 0, 0], "m2")], "m1")
    with pytest.raises(StoreMismatchError, match="vectors of 5 dimensions; its vectors in the index have 4"):
        writer.upsert_embeddings([embedding(a, [1, 0, 0, 0, 0], "m2")], "m2")
    assert [held.vectors for held in writer.indexed_embedders()] == [3, 3]


def test_removals_reach_every_embedders_vectors(writer: StoreWriter) -> None:
    a, b = two_embedders(writer)
    writer.remove_crops_except([a.image_id], keep_crop_ids=())
    assert [held.vectors for held in writer.indexed_embedders()] == [2, 2]
    writer.remove_images([b.image_id])
    assert [held.vectors for held in writer.indexed_embedders()] == [1, 1]
    assert writer.image_ids_embedded_by("m2") == {a.image_id}


def test_the_default_switches_back_and_forth_and_only_another_can_be_dropped(writer: StoreWriter) -> None:
    two_embedders(writer)
    writer.set_default_embedder("m2")
    assert writer.default_embedder() == "m2" and StoreWriter(writer.uri).default_embedder() == "m2"
    with pytest.raises(ValueError, match="--drop: 'm2' is the default embedder; switch first"):
        writer.drop_embedder("m2")
    writer.set_default_embedder("m1")  # the rollback
    assert writer.drop_embedder("m2") == 3
    assert writer.vector_tables() == {"m1": EMBEDDINGS}
    assert added_vector_table("m2") not in writer.table_names()
    assert writer.counts() == {"images": 2, "crops": 1, "embeddings": 3}


def test_naming_an_embedder_the_index_lacks_names_the_option_and_those_it_holds(writer: StoreWriter) -> None:
    two_embedders(writer)
    for option, change in (("--default", writer.set_default_embedder), ("--drop", writer.drop_embedder)):
        with pytest.raises(
            StoreMismatchError, match=f"{option}: .* no vectors of embedder 'm3'; it holds m1 \\(default\\), m2"
        ):
            change("m3")
    with pytest.raises(StoreMismatchError, match=r"--embedder: .*'m3'"):
        StoreReader(writer.uri, embedder_id="m3").search(np.array([1.0, 0, 0]), "", 1)
    assert writer.default_embedder() == "m1" and len(writer.vector_tables()) == 2  # nothing written


def test_an_index_in_the_one_embedder_layout_reads_as_one_with_a_default_embedder(tmp_path: Path) -> None:
    """The fixture was written by the code before several embedders (tests/data/make_legacy_index.py)."""
    shutil.copytree(LEGACY_INDEX / "lancedb", tmp_path / "lancedb")
    store = StoreWriter(str(tmp_path / "lancedb"))
    embedder = "plugin:tests.plugins:mean_colour_embedder"
    assert store.vector_tables() == {embedder: EMBEDDINGS}
    [held] = store.indexed_embedders()
    assert (held.embedder, held.dim, held.vectors, held.default) == (embedder, 3, 7, True)
    assert store.has_text_index() and store.counts() == {"images": 4, "crops": 3, "embeddings": 7}
    red = StoreReader(str(tmp_path / "lancedb")).search(np.array([1.0, 0, 0]), "kind = 'crop'", 1)
    assert store.crops_by_id([red[0]["crop_id"]])[red[0]["crop_id"]].class_name == "red"


def test_a_photo_an_embedder_has_not_reached_yet_is_not_taken_for_one_lacking_a_crop_vector(
    writer: StoreWriter,
) -> None:
    """An embedder being added (or a run cut short) holds some photos: the rest are the plan's to embed, not
    photos to detect again for a crop vector their table seems to lack."""
    a, b = image("a"), image("b")
    big_a, big_b = (crop(parent, "big").model_copy(update={"area_fraction": 0.5}) for parent in (a, b))
    writer.upsert_images([a, b])
    writer.upsert_crops([big_a, big_b])
    rows = [embedding(record, [1, 0, 0]) for record in (a, b, big_a, big_b)]
    writer.upsert_embeddings(rows, "m1")
    writer.upsert_embeddings([embedding(a, [1, 0, 0, 0], "m2"), embedding(big_a, [0, 1, 0, 0], "m2")], "m2")
    assert writer.images_with_crops_lacking_vectors(0.9) == set()  # b is m2's to embed, a is whole
    writer._open(added_vector_table("m2")).delete(f"id = '{big_a.crop_id}'")
    assert writer.images_with_crops_lacking_vectors(0.9) == {a.image_id}


def test_an_embedder_dropped_and_added_again_gets_a_new_table_at_its_new_width(writer: StoreWriter) -> None:
    """The writer keeps table handles; one kept past its table's drop pointed at deleted files (LanceError: Not found),
    so the embedder could never come back, in that process, under the table name its id hashes to."""
    a, b = two_embedders(writer)
    assert writer.drop_embedder("m2") == 3
    writer.upsert_embeddings([embedding(a, [1, 0, 0, 0, 0], "m2"), embedding(b, [0, 1, 0, 0, 0], "m2")], "m2")
    expected = {"m1": (3, 3), "m2": (5, 2)}  # embedder -> (width, vectors): m2's old 4-d rows are gone
    assert {held.embedder: (held.dim, held.vectors) for held in writer.indexed_embedders()} == expected
    assert {held.embedder: (held.dim, held.vectors) for held in StoreWriter(writer.uri).indexed_embedders()} == expected
    assert writer.vector_tables()["m2"] == added_vector_table("m2")
