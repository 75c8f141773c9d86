"""Tiles end to end: `cropsearch index --tiles`, the index signature, re-runs, and one hit per photo."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from components.store.writer import StoreWriter
from flows.cli import main
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import IndexParams, QueryParams
from tests.flows.test_embedders import MEAN, coloured_photos, ids_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DETECTOR = "plugin:tests.plugins:colour_blob_detector"


def crops_by_source(db: str) -> dict[str, set[str]]:
    store = StoreWriter(db)
    found: dict[str, set[str]] = {}
    for crop in store.crops_by_id(sorted(ids_of(db, "crops", "crop_id"))).values():
        found.setdefault(crop.source, set()).add(crop.crop_id)
    return found


def test_tiles_are_a_flag_and_a_flow_parameter_of_index() -> None:
    assert "--tiles" in CliRunner().invoke(main, ["index", "--help"]).output
    assert IndexParams(tiles=["2", "3"]).detection.tiles == [2, 3]  # what `--tiles 2,3` hands the flow
    assert index_coco.validate_parameters({"tiles": [3, 2]})["tiles"] == [3, 2]
    refused = CliRunner().invoke(main, ["index", "--tiles", "1"])
    assert refused.exit_code == 2 and "error: tiles: " in refused.output
    assert "level 1 is the whole photo" in refused.output


def test_adding_tiles_cuts_every_photo_from_its_stored_boxes_and_dropping_them_drops_the_tiles(
    tmp_path: Path,
) -> None:
    photos, data = coloured_photos(tmp_path / "photos", 3), tmp_path / "data"
    db = str(data / "lancedb")
    index = {"source": str(photos), "data_dir": data, "detector": DETECTOR, "embedder": MEAN, "device": "cpu"}
    plain = index_coco(**index)
    detected = crops_by_source(db)
    assert plain.images_new == 4 and set(detected) == {"detector"} and len(detected["detector"]) == 3

    # The same photos with tiles: a new signature, but the detector's boxes stand, so each photo is
    # only cut into tiles (tests/flows/test_regions_added.py: no detection, no vector made twice).
    flags = ["--source", str(photos), "--data-dir", str(data), "--detector", DETECTOR, "--embedder", MEAN]
    tiled = CliRunner().invoke(main, ["index", *flags, "--device", "cpu", "--tiles", "2,3"])
    assert tiled.exit_code == 0, tiled.output
    with_tiles = crops_by_source(db)
    assert with_tiles["detector"] == detected["detector"]  # the same ids: the same rows, files and vectors
    assert len(with_tiles["tile"]) == 4 * (4 + 9)
    store = StoreWriter(db)
    images = store.images_by_id(sorted(ids_of(db, "images", "image_id")))
    assert sorted(image.caption for image in images.values()) == [
        "no objects detected",
        *sorted(f"this image contains 1 {colour}" for colour in ("red", "green", "blue")),
    ]
    assert store.class_names() == {"red", "green", "blue"}
    again = index_coco(**index, tiles=[3, 2])
    assert again.images_new == 0 and again.model_batches == 0  # the levels in any order are the same tiles

    # One hit per photo: the best region of each photo ranks it, its other regions (tiles) fold under it.
    params = QueryParams(data_dir=data, k=4, kinds="both", mode="vector", render=False)
    hits = query(text="red", **params.flat()).hits
    assert len({hit.image.image_id for hit in hits}) == len(hits) == 4
    assert hits[0].crop is not None and hits[0].crop.class_name == "red"
    assert any(folded.crop is not None and folded.crop.source == "tile" for folded in hits[0].folded)
    unfolded = QueryParams(data_dir=data, k=4, kinds="both", mode="vector", render=False, one_hit_per_image=False)
    every = query(text="red", **unfolded.flat())
    assert len({hit.image.image_id for hit in every.hits}) < len(every.hits)  # unfolded, a photo's tiles crowd the list

    dropped = index_coco(**index)
    assert dropped.images_recut == 4 and crops_by_source(db) == detected  # the tiles' rows go, and their files
    files = {path.stem for path in (data / "crops").rglob("*.jpg")}
    assert files == detected["detector"]
