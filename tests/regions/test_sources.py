"""The one protocol: the detector's boxes and tiles come back alike, and a run's settings choose its sources."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.regions.detector import DetectorRegions
from components.regions.region import Region
from components.regions.sources import run_sources
from components.regions.tiles import TileRegions
from schemas.settings import DetectionSettings
from tests.plugins import ColourBlobDetector


def red_square() -> Image.Image:
    pixels = np.full((90, 120, 3), 128, dtype=np.uint8)
    pixels[10:30, 20:60] = (230, 20, 20)
    return Image.fromarray(pixels)


def test_the_detector_is_a_region_source_of_named_boxes_with_its_confidence() -> None:
    source = DetectorRegions(ColourBlobDetector(), "blob", DetectionSettings())
    [[region], []] = source.regions([red_square(), Image.new("RGB", (40, 30), (128, 128, 128))])
    assert source.runs_a_model is True
    assert region == Region(20, 10, 60, 30, source="detector", proposer="blob", class_name="red", class_id=0, score=0.9)


def test_a_runs_settings_ask_for_the_detector_the_tiles_or_both_in_that_order() -> None:
    detector = ColourBlobDetector()
    both = run_sources(DetectionSettings(tiles=[2]), detector, "blob")
    assert [type(source) for source in both] == [DetectorRegions, TileRegions]
    assert [type(source) for source in run_sources(DetectionSettings(), detector, "blob")] == [DetectorRegions]
    tiles_only = run_sources(DetectionSettings(max_detections=0, tiles=[2, 3]), None, "blob")
    assert [type(source) for source in tiles_only] == [TileRegions] and tiles_only[0].levels == (2, 3)  # type: ignore[attr-defined]
    assert run_sources(DetectionSettings(max_detections=0), None, "blob") == []  # whole photos only
    with pytest.raises(ValueError, match="no detector is loaded"):
        run_sources(DetectionSettings(), None, "blob")
