"""Several embedders in one index, end to end: adding one embeds what is stored with no detector pass; new
photos and new settings reach every embedder; queries, the default and `cropsearch models`; older indexes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from components.store.schema import EMBEDDINGS, added_vector_table
from components.store.writer import StoreWriter
from flows.cli import main
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import QueryParams, signature_of
from schemas.settings import DetectionSettings
from tests.data.make_legacy_index import DETECTOR as LEGACY_DETECTOR
from tests.data.make_legacy_index import EMBEDDER as LEGACY_EMBEDDER
from tests.data.make_legacy_index import SOURCE_NAME as LEGACY_SOURCE
from tests.plugins import CountingColourBlobDetector

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DETECTOR = "plugin:tests.plugins:counting_colour_blob_detector"
MEAN = "plugin:tests.plugins:mean_colour_embedder"
SPREAD = "plugin:tests.plugins:mean_and_spread_embedder"
LEGACY_INDEX = Path(__file__).resolve().parents[1] / "data" / "legacy-index"


def coloured_photos(folder: Path, count: int) -> Path:
    """Grey photos with one coloured square each (one crop each), and a plain one."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = [(220, 20, 20), (20, 200, 40), (30, 40, 210)]
    for n in range(count):
        pixels = np.full((90, 120, 3), 128, dtype=np.uint8)
        pixels[10 + n : 40 + n, 10 + 2 * n : 50 + 2 * n] = colours[n % 3]
        Image.fromarray(pixels).save(folder / f"photo-{n:02d}.png")
    Image.new("RGB", (120, 90), (128, 128, 128)).save(folder / "plain.png")
    return folder


def vectors_of(db_uri: str, table: str) -> dict[str, list[float]]:
    import lancedb

    rows = lancedb.connect(db_uri).open_table(table).to_arrow().select(["id", "vector"]).to_pylist()
    return {row["id"]: row["vector"] for row in rows}


def ids_of(db_uri: str, table: str, key: str) -> set[str]:
    import lancedb

    return set(lancedb.connect(db_uri).open_table(table).to_arrow().column(key).to_pylist())


def test_an_added_embedder_embeds_what_is_stored_with_no_detector_pass(tmp_path: Path) -> None:
    photos, data = coloured_photos(tmp_path / "photos", 5), tmp_path / "data"
    index = {"source": str(photos), "data_dir": data, "detector": DETECTOR, "device": "cpu", "chunk_size": 2}
    first = index_coco(**index, embedder=MEAN)
    db = str(data / "lancedb")
    assert first.images_new == 6 and first.crops == 5 and first.detector_batches > 0

    detector_batches = CountingColourBlobDetector.batches
    added = index_coco(**index, embedder=SPREAD)
    assert CountingColourBlobDetector.batches == detector_batches  # the detector never ran
    assert added.detector_batches == 0 and added.images_new == 0 and added.crops == 0
    assert added.images_embedded == {SPREAD: 6} and added.embeddings == 11
    spread = vectors_of(db, added_vector_table(SPREAD))
    assert (
        set(spread)
        == set(vectors_of(db, EMBEDDINGS))
        == ids_of(db, "images", "image_id") | ids_of(db, "crops", "crop_id")
    )
    # The same vectors a fresh index made with this embedder alone holds: crops cut as they were then.
    alone = index_coco(**index, embedder=SPREAD, db_uri=str(tmp_path / "alone"), crops_uri=str(tmp_path / "crops"))
    assert alone.images_new == 6
    assert vectors_of(str(tmp_path / "alone"), EMBEDDINGS) == spread

    again = index_coco(**index)  # no --embedder: the index's own two, nothing to do
    assert again.model_batches == 0 and again.images_new == 0 and again.images_embedded == {}

    # Queries: the default (the first embedder) unless one is named; each searches its own vectors.
    def red(**named: str) -> tuple[str | None, str]:
        params = QueryParams(data_dir=data, k=1, kinds="crop", mode="vector", render=False, **named)
        result = query(text="red", **params.flat())
        return result.embedder, result.hits[0].crop.class_name  # type: ignore[union-attr]

    assert red() == (MEAN, "red") and red(embedder=SPREAD) == (SPREAD, "red")
    listed = CliRunner().invoke(main, ["models", "--db", db])
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines()[1:]]
    assert [(row[0], row[1:3]) for row in rows] == [(MEAN, ["yes", "3"]), (SPREAD, ["6", "11"])]
    assert rows[0][3] == "11"

    # A new photo is detected once and embedded by both; new settings re-detect and reach both.
    coloured_photos(photos, 6)
    grown = index_coco(**index)
    assert (grown.images_new, grown.crops) == (1, 1) and grown.embeddings == 2 * 2
    padded = index_coco(**index, padding=0.2)
    assert padded.images_new == 7 and padded.detector_batches > 0 and padded.embeddings == 2 * 13
    crops_now = ids_of(db, "crops", "crop_id")
    for table in (EMBEDDINGS, added_vector_table(SPREAD)):  # the old crops' vectors are gone from both
        assert set(vectors_of(db, table)) == ids_of(db, "images", "image_id") | crops_now

    # The default switches (and back: the rollback); only a non-default embedder can be dropped.
    assert CliRunner().invoke(main, ["models", "--db", db, "--default", SPREAD]).exit_code == 0
    assert red() == (SPREAD, "red")
    refused = CliRunner().invoke(main, ["models", "--db", db, "--drop", SPREAD])
    assert refused.exit_code == 2 and "--drop" in refused.output and "default" in refused.output
    dropped = CliRunner().invoke(main, ["models", "--db", db, "--drop", MEAN])
    assert dropped.exit_code == 0 and f"dropped 13 vectors of {MEAN}" in dropped.output
    assert StoreWriter(db).vector_tables() == {SPREAD: added_vector_table(SPREAD)}
    assert red() == (SPREAD, "red") and index_coco(**index, padding=0.2).model_batches == 0


def test_naming_an_embedder_the_index_lacks_is_refused_with_nothing_written(tmp_path: Path) -> None:
    photos, data = coloured_photos(tmp_path / "photos", 2), tmp_path / "data"
    index_coco(source=str(photos), data_dir=data, detector=DETECTOR, embedder=MEAN, device="cpu")
    db = str(data / "lancedb")
    before = StoreWriter(db).indexed_embedders()
    for option in ("--default", "--drop"):
        refused = CliRunner().invoke(main, ["models", "--db", db, option, SPREAD])
        assert refused.exit_code == 2, refused.output
        assert f"{option}: " in refused.output and f"holds no vectors of embedder '{SPREAD}'" in refused.output
    asked = CliRunner().invoke(main, ["query", "red", "--data-dir", str(data), "--embedder", SPREAD])
    assert (
        asked.exit_code == 2
        and "--embedder: " in asked.output
        and f"cropsearch index --embedder {SPREAD}" in asked.output
    )
    assert StoreWriter(db).indexed_embedders() == before


def test_an_index_in_the_one_embedder_layout_is_upgraded_in_place_and_takes_a_second_embedder(tmp_path: Path) -> None:
    """The fixture was written by the code before several embedders (tests/data/make_legacy_index.py)."""
    shutil.copytree(LEGACY_INDEX / "lancedb", tmp_path / "data" / "lancedb")
    shutil.copytree(LEGACY_INDEX / "photos", tmp_path / "photos")
    index = {"source": str(tmp_path / "photos"), "source_name": LEGACY_SOURCE, "data_dir": tmp_path / "data"}
    db = str(tmp_path / "data" / "lancedb")
    before = vectors_of(db, EMBEDDINGS)

    # Its embedder is read from the index; proposals, which it predates, are not asked for until the end.
    upgraded = index_coco(**index, detector=LEGACY_DETECTOR, device="cpu", proposals=0)
    assert upgraded.model_batches == 0 and upgraded.images_new == 0 and upgraded.images_already_indexed == 4
    store = StoreWriter(db)
    signature = signature_of(LEGACY_DETECTOR, DetectionSettings(proposals=0))
    assert {image.index_signature for image in store.images_by_id(list(ids_of(db, "images", "image_id"))).values()} == {
        signature
    }
    assert vectors_of(db, EMBEDDINGS) == before and store.default_embedder() == LEGACY_EMBEDDER
    for mode in ("vector", "text"):
        params = QueryParams(data_dir=tmp_path / "data", k=1, kinds="crop", mode=mode, render=False)
        assert query(text="red", **params.flat()).hits[0].crop.class_name == "red"  # type: ignore[union-attr]

    added = index_coco(**index, detector=LEGACY_DETECTOR, embedder=SPREAD, device="cpu", proposals=0)
    assert added.detector_batches == 0 and added.images_embedded == {SPREAD: 4} and added.embeddings == 7
    assert set(vectors_of(db, added_vector_table(SPREAD))) == set(before)
    assert vectors_of(db, EMBEDDINGS) == before and store.default_embedder() == LEGACY_EMBEDDER

    # The default proposals: the photos are re-cut from their stored boxes, nothing detected or embedded again.
    recut = index_coco(**index, detector=LEGACY_DETECTOR, device="cpu")
    assert recut.detector_batches == 0 and recut.images_recut == 4 and recut.images_new == 0
    after = vectors_of(db, EMBEDDINGS)
    assert {key: after[key] for key in before} == before


def test_a_run_follows_embedders_added_or_dropped_while_it_waited_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run reads the index's embedders when it starts and may wait for the writer slot before it plans."""
    photos, data = coloured_photos(tmp_path / "photos", 2), tmp_path / "data"
    index = {"source": str(photos), "data_dir": data, "detector": DETECTOR, "device": "cpu"}
    index_coco(**index, embedder=MEAN)
    store = StoreWriter(str(data / "lancedb"))
    before = store.image_ids_embedded_by(MEAN)
    coloured_photos(photos, 3)

    # MEAN appeared after this run read the embedders: it is left to the next run, never half-written.
    monkeypatch.setattr("flows.index_coco.index_embedders", lambda params: {})
    raced = index_coco(**index, embedder=SPREAD)
    assert (raced.images_new, raced.images_embedded) == (1, {SPREAD: 3})
    assert store.image_ids_embedded_by(MEAN) == before and len(store.image_ids_embedded_by(SPREAD)) == 4
    monkeypatch.undo()
    caught_up = index_coco(**index)
    assert caught_up.images_embedded == {MEAN: 1} and caught_up.detector_batches == 0
    assert store.image_ids_embedded_by(MEAN) == store.image_ids_embedded_by(SPREAD)

    # SPREAD was dropped after this run read the embedders: it is not made again, half full.
    assert CliRunner().invoke(main, ["models", "--db", str(data / "lancedb"), "--drop", SPREAD]).exit_code == 0
    monkeypatch.setattr("flows.index_coco.index_embedders", lambda params: {MEAN: MEAN, SPREAD: SPREAD})
    coloured_photos(photos, 4)
    assert index_coco(**index).images_new == 1
    assert list(store.vector_tables()) == [MEAN]
