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
    both = run_sources(DetectionSettings(tiles=[2], proposals=0), detector, "blob")
    assert [type(source) for source in both] == [DetectorRegions, TileRegions]
    alone = run_sources(DetectionSettings(proposals=0), detector, "blob")
    assert [type(source) for source in alone] == [DetectorRegions]
    tiles_only = run_sources(DetectionSettings(max_detections=0, tiles=[2, 3], proposals=0), None, "blob")
    assert [type(source) for source in tiles_only] == [TileRegions] and tiles_only[0].levels == (2, 3)  # type: ignore[attr-defined]
    assert run_sources(DetectionSettings(max_detections=0, proposals=0), None, "blob") == []  # whole photos only
    with pytest.raises(ValueError, match="no detector is loaded"):
        run_sources(DetectionSettings(), None, "blob")


def test_proposals_come_between_the_detector_and_the_tiles() -> None:
    from components.regions.proposals import ProposalRegions

    sources = run_sources(DetectionSettings(tiles=[2], proposals=7), ColourBlobDetector(), "blob")
    assert [type(source) for source in sources] == [DetectorRegions, ProposalRegions, TileRegions]
    assert sources[1].limit == 7  # type: ignore[attr-defined]


def test_a_region_found_again_by_a_later_source_is_stored_once_as_the_earlier_sources() -> None:
    from components.regions.sources import deduplicated
    from schemas.settings import DEDUPE_IOU

    named = Region(10, 10, 50, 50, "detector", "blob", "red", 0, 0.9)
    # Two boxes of one object from the detector stay: a source's own overlaps are its own business.
    also_named = Region(11, 11, 51, 51, "detector", "blob", "orange", 1, 0.5)
    same = Region(12, 12, 52, 52, "proposal", "mser-v1")  # IoU 0.82 with the detector's
    beside = Region(30, 30, 70, 70, "proposal", "mser-v1")  # IoU 0.22: a region of its own
    tile_of_it = Region(30, 30, 70, 71, "tile", "tiles")  # IoU 0.98 with the proposal kept
    kept = deduplicated([[named, also_named], [same, beside], [tile_of_it]])
    assert kept == [named, also_named, beside]
    # Taller than `named` by a share: IoU just above the threshold is the same region, just below another.
    above = Region(10, 10, 50, 10 + 40 / (DEDUPE_IOU + 0.01), "proposal", "mser-v1")
    below = Region(10, 10, 50, 10 + 40 / (DEDUPE_IOU - 0.01), "proposal", "mser-v1")
    assert deduplicated([[named], [above, below]]) == [named, below]
    assert deduplicated([[], [same, beside]]) == [same, beside]
