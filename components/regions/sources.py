"""The region sources a run's detection settings ask for, and one photo's regions from all of them."""

from __future__ import annotations

from collections.abc import Sequence

from components.models.detector import Detector
from components.regions.detector import DetectorRegions
from components.regions.proposals import ProposalRegions
from components.regions.region import Region, RegionSource, box_iou
from components.regions.tiles import TileRegions
from schemas.records import CropRecord
from schemas.settings import DEDUPE_IOU, DetectionSettings


def run_sources(settings: DetectionSettings, detector: Detector | None, detector_id: str) -> list[RegionSource]:
    """The detector (unless no boxes are asked for: `max_detections` 0), the proposals, then the tiles.

    Their order is the order of a photo's crops, and the order in which a region found twice is kept
    (`deduplicated`): a named box before a proposal of the same object, a proposal before a tile. A
    run that asks for the detector's boxes must have loaded it; one embedding stored crops (an added
    embedder) asks no source at all.
    """
    sources: list[RegionSource] = []
    if settings.max_detections > 0:
        if detector is None:
            raise ValueError("the detector's boxes are asked for (max_detections > 0), and no detector is loaded")
        sources.append(DetectorRegions(detector, detector_id, settings))
    return sources + sources_beyond_the_detector(settings)


def sources_beyond_the_detector(settings: DetectionSettings) -> list[RegionSource]:
    """The proposals, then the tiles, that `settings` ask for: the sources that need no detector and no name."""
    sources: list[RegionSource] = []
    if settings.proposals:
        sources.append(ProposalRegions(settings.proposals))
    if settings.tiles:
        sources.append(TileRegions(settings.tiles))
    return sources


def region_of(crop: CropRecord) -> Region:
    """A stored crop as the region it was cut from (a detector's box read back, to compare new regions with)."""
    box = (crop.x1, crop.y1, crop.x2, crop.y2)
    return Region(*box, crop.source, crop.detector, crop.class_name or None, crop.class_id, crop.confidence)


def deduplicated(per_source: Sequence[Sequence[Region]], iou: float = DEDUPE_IOU) -> list[Region]:
    """One photo's regions from every source, in the sources' order, less those an earlier source already has.

    A region whose object box (without a proposal's padding) overlaps one of an earlier source's at
    `iou` or more is the same region found twice and is dropped; a source's own regions are never
    compared with each other (the detector's NMS keeps two classes' boxes of one object, and the crops
    of indexes made before stay as they were).
    """
    kept: list[Region] = []
    for regions in per_source:
        earlier = list(kept)
        kept += [
            region for region in regions if all(box_iou(region.object_box, other.object_box) < iou for other in earlier)
        ]
    return kept
