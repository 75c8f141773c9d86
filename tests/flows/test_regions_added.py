"""Regions beyond the detector's, added to and dropped from an index: no detection again, no vector made twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from flows.cli import main
from flows.index_coco import index_coco
from tests.flows.test_embedders import MEAN, coloured_photos, vectors_of
from tests.flows.test_tiles import DETECTOR, crops_by_source

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def photos_with_an_unnamed_object(folder: Path) -> Path:
    """The coloured photos, and one holding a dark grey square: no colour, so the colour detector never names it."""
    coloured_photos(folder, 3)
    pixels = np.full((90, 120, 3), 128, dtype=np.uint8)
    pixels[30:60, 40:70] = 30
    Image.fromarray(pixels).save(folder / "unnamed.png")
    return folder


def crop_files(data: Path) -> set[str]:
    return {path.stem for path in (data / "crops").rglob("*.jpg")}


def test_proposals_are_a_flag_and_a_flow_parameter_of_index() -> None:
    assert "--proposals" in CliRunner().invoke(main, ["index", "--help"]).output
    assert index_coco.validate_parameters({"proposals": 20})["proposals"] == 20
    refused = CliRunner().invoke(main, ["index", "--proposals", "101"])
    assert refused.exit_code == 2 and "error: proposals: " in refused.output


def test_adding_and_dropping_proposals_and_tiles_detects_nothing_again_and_embeds_only_new_regions(
    tmp_path: Path,
) -> None:
    photos, data = photos_with_an_unnamed_object(tmp_path / "photos"), tmp_path / "data"
    db = str(data / "lancedb")
    index = {"source": str(photos), "data_dir": data, "detector": DETECTOR, "embedder": MEAN, "device": "cpu"}
    plain = index_coco(**index, proposals=0)
    detected, vectors = crops_by_source(db), vectors_of(db, "embeddings")
    assert plain.images_new == 5 and set(detected) == {"detector"} and len(detected["detector"]) == 3

    # Proposals added: every photo is re-cut from its stored boxes, no detector pass, and only the
    # proposals the index lacks are cut and embedded. The coloured squares' proposals overlap the
    # detector's boxes (IoU >= 0.7): stored once, as the detector's; the dark square is new.
    flags = ["--source", str(photos), "--data-dir", str(data), "--detector", DETECTOR, "--embedder", MEAN]
    added = CliRunner().invoke(main, ["--no-host", "index", *flags, "--device", "cpu", "--proposals", "5"])
    assert added.exit_code == 0, added.output
    with_proposals = crops_by_source(db)
    assert with_proposals["detector"] == detected["detector"] and len(with_proposals["proposal"]) == 1
    after = vectors_of(db, "embeddings")
    assert {key: after[key] for key in vectors} == vectors  # nothing stored was embedded again
    assert set(after) - set(vectors) == with_proposals["proposal"]
    assert crop_files(data) == detected["detector"] | with_proposals["proposal"]

    report = index_coco(**index, proposals=5, tiles=[2])
    assert report.images_recut == 5 and report.detector_batches == 0 and report.images_new == 0
    assert report.embeddings == 5 * 4  # the tiles alone: the proposal's vector is stored
    with_both = crops_by_source(db)
    assert with_both["proposal"] == with_proposals["proposal"] and len(with_both["tile"]) == 5 * 4
    again = index_coco(**index, proposals=5, tiles=[2])
    assert again.images_already_indexed == 5 and again.images_recut == 0 and again.model_batches == 0

    # Dropped again: their rows, vectors and files go; the detector's crops and every vector of theirs stay.
    dropped = index_coco(**index, proposals=0)
    assert dropped.images_recut == 5 and dropped.model_batches == 0 and dropped.embeddings == 0
    assert crops_by_source(db) == detected and vectors_of(db, "embeddings") == vectors
    assert crop_files(data) == detected["detector"]

    # The detector's own settings changed: its boxes no longer stand, so the photos are detected again.
    redetected = index_coco(**index, proposals=5, confidence=0.5)
    assert redetected.images_recut == 0 and redetected.images_new == 5 and redetected.detector_batches > 0
