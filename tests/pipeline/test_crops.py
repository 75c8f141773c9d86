"""Crop geometry, ids, files and captions."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.models.detector import Detection
from components.pipeline.crops import (
    caption_for,
    crop_id_for,
    crop_jpegs,
    crop_path,
    decoded_crop_jpeg,
    materialize_crops,
    padded_box,
    to_crop_records,
)
from components.pipeline.images import decode_rgb
from components.regions.detector import regions_of
from components.regions.region import Region
from components.regions.tiles import TILES
from components.store.objects import ObjectFiles
from schemas.records import ImageRecord
from schemas.settings import DetectionSettings
from tests.conftest import ultralytics_assets

PARENT = ImageRecord(image_id="ab" * 32, uri="/x.jpg", source="t", width=200, height=100, num_bytes=1)


def detection(x1: float, y1: float, x2: float, y2: float, name: str = "cat", class_id: int = 1) -> Region:
    """A box of the detector "det", as the detector's region source gives it."""
    [region] = regions_of([Detection(x1, y1, x2, y2, class_id=class_id, class_name=name, confidence=0.8)], "det")
    return region


def tile(x1: float, y1: float, x2: float, y2: float) -> Region:
    return Region(x1, y1, x2, y2, source="tile", proposer=TILES)


def test_boxes_are_clamped_and_slivers_dropped() -> None:
    found = [detection(-10, -5, 50, 40), detection(10, 10, 15, 90), detection(150, 60, 260, 130, "dog", 2)]
    crops = to_crop_records(PARENT, found, DetectionSettings(min_box_pixels=16))
    assert [(c.x1, c.y1, c.x2, c.y2) for c in crops] == [(0, 0, 50, 40), (150, 60, 200, 100)]
    assert crops[0].area_fraction == 50 * 40 / (200 * 100)
    assert {c.image_id for c in crops} == {PARENT.image_id}


def test_crop_ids_are_deterministic_and_tell_detections_apart() -> None:
    box = (10.2, 20.4, 50.0, 60.0)
    same = crop_id_for(PARENT.image_id, "det", 1, box)
    assert same == crop_id_for(PARENT.image_id, "det", 1, (10.4, 20.1, 50.3, 59.9))
    assert same != crop_id_for(PARENT.image_id, "other-det", 1, box)
    assert same != crop_id_for(PARENT.image_id, "det", 2, box)
    assert len(same) == 64


def test_a_detector_crops_id_is_what_it_was_before_region_sources_and_a_tile_never_shares_it() -> None:
    """Indexes made before tiles keep their crop ids (so their work is found done); the source is in every other id."""
    box = (10.0, 20.0, 50.0, 60.0)
    before = hashlib.sha256(f"{PARENT.image_id}|det|1|10,20,50,60".encode()).hexdigest()  # the id's recipe until now
    assert crop_id_for(PARENT.image_id, "det", 1, box) == crop_id_for(PARENT.image_id, "det", 1, box, "detector")
    assert crop_id_for(PARENT.image_id, "det", 1, box) == before
    # The same corners, class and proposer from the tiles are another crop.
    assert crop_id_for(PARENT.image_id, "det", 1, box, "tile") != before
    [as_detected, as_tile] = to_crop_records(
        PARENT, [detection(*box), Region(*box, source="tile", proposer="det", class_id=1)], DetectionSettings()
    )
    assert as_detected.crop_id == before and as_tile.crop_id != before
    assert (as_detected.source, as_tile.source) == ("detector", "tile")


def test_a_tile_is_a_crop_with_no_class_whose_confidence_is_that_of_a_whole_photo() -> None:
    [crop] = to_crop_records(PARENT, [tile(-3, 0, 114.4, 57)], DetectionSettings())
    assert (crop.x1, crop.x2, crop.source, crop.detector) == (0, 114.4, "tile", TILES)
    assert (crop.class_name, crop.class_id, crop.confidence, crop.label) == ("", -1, 1.0, "tile")
    assert crop.area_fraction == 114.4 * 57 / (200 * 100)
    assert to_crop_records(PARENT, [tile(0, 0, 15, 57)], DetectionSettings(min_box_pixels=16)) == []


def test_same_box_twice_yields_one_crop() -> None:
    crops = to_crop_records(PARENT, [detection(0, 0, 40, 40), detection(0.2, 0, 40, 40)], DetectionSettings())
    assert len(crops) == 1


def test_padding_grows_the_box_inside_the_image() -> None:
    (crop,) = to_crop_records(PARENT, [detection(10, 10, 50, 50)], DetectionSettings())
    assert padded_box(crop, 200, 100, 0.0) == (10, 10, 50, 50)
    assert padded_box(crop, 200, 100, 0.5) == (0, 0, 70, 70)


def test_materialize_cuts_all_crops_from_one_decode_and_names_files_by_id(tmp_path: Path) -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[10:50, 10:50] = (250, 0, 0)
    parent = Image.fromarray(pixels)
    crops = to_crop_records(
        PARENT, [detection(10, 10, 50, 50), detection(100, 20, 180, 90, "dog", 2)], DetectionSettings()
    )
    saved = materialize_crops(parent, crops, tmp_path / "crops", padding=0.0)
    for crop in saved:
        assert Path(crop.uri) == (crop_path(tmp_path / "crops", crop.crop_id)).resolve()
        assert Path(crop.uri).is_file()
    red = Image.open(saved[0].uri)
    assert red.size == (40, 40)
    assert np.asarray(red)[..., 0].mean() > 200
    assert not list((tmp_path / "crops").rglob("*.tmp"))


def _bus() -> Image.Image:
    return decode_rgb(next(path for path in ultralytics_assets() if path.name == "bus.jpg"))


# Rectangles of the 810 x 1080 bus photo (left, top, right, bottom): a tall strip, a large block, one pixel.
_BOXES = [(0, 0, 17, 300), (100, 200, 640, 811), (5, 5, 6, 6)]


def test_crop_files_hold_the_bytes_pillow_wrote_at_the_same_quality() -> None:
    """Crops encoded now (OpenCV) are those encoded before (Pillow): one kind of file and of vector in an index."""
    parent = _bus()
    for box, data in zip(_BOXES, crop_jpegs(parent, _BOXES), strict=True):
        by_pillow = io.BytesIO()
        parent.crop(box).save(by_pillow, format="JPEG", quality=92)
        assert data == by_pillow.getvalue(), box


def test_a_crops_jpeg_decodes_to_the_very_pixels_its_file_shows() -> None:
    """The embedder's fast decode of a crop's own bytes gives what the general decode gives, the box's pixels."""
    parent = _bus()
    for box, data in zip(_BOXES, crop_jpegs(parent, _BOXES), strict=True):
        fast, general = decoded_crop_jpeg(data), decode_rgb(io.BytesIO(data))
        assert (fast.mode, fast.size) == ("RGB", (box[2] - box[0], box[3] - box[1]))
        assert np.array_equal(np.asarray(fast), np.asarray(general))
        # JPEG at quality 92 moves a pixel by 1-1.5 levels on average here; a wrong cut or channel order by tens.
        cut = np.asarray(parent.crop(box)).astype(int)
        assert np.abs(np.asarray(fast).astype(int) - cut).mean() < 3, box


def test_caption_counts_classes() -> None:
    crops = to_crop_records(
        PARENT,
        [
            detection(0, 0, 40, 40, "person", 0),
            detection(60, 0, 100, 40, "person", 0),
            detection(120, 0, 160, 40, "tv", 5),
            tile(0, 0, 114, 57),
        ],
        DetectionSettings(),
    )
    assert caption_for(crops) == "this image contains 2 person, 1 tv"  # a tile is no object found in the photo
    assert caption_for([]) == caption_for(crops[-1:]) == "no objects detected"


def test_a_crop_write_killed_midway_leaves_no_file_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write killed after its bytes are on disk, before its rename, leaves neither the file nor its temporary one."""
    from components.store import objects

    def killed(source: object, target: object) -> None:
        raise KeyboardInterrupt("killed mid-write")

    target = tmp_path / "crops" / "ab" / "abcdef.jpg"
    picture = crop_jpegs(Image.new("RGB", (8, 8)), [(0, 0, 8, 8)])[0]
    monkeypatch.setattr(objects.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ObjectFiles().write_bytes(str(target), picture)
    monkeypatch.undo()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file went too
    ObjectFiles().write_bytes(str(target), picture)  # the rerun writes it whole
    assert Image.open(target).size == (8, 8)
