"""The region sources a run's detection settings ask for."""

from __future__ import annotations

from components.models.detector import Detector
from components.regions.detector import DetectorRegions
from components.regions.region import RegionSource
from components.regions.tiles import TileRegions
from schemas.settings import DetectionSettings


def run_sources(settings: DetectionSettings, detector: Detector | None, detector_id: str) -> list[RegionSource]:
    """The detector (unless no boxes are asked for: `max_detections` 0), then the tiles of `settings.tiles`.

    Their order is the order of a photo's crops. A run that asks for the detector's boxes must have
    loaded it; one embedding stored crops (an added embedder) asks no source at all.
    """
    sources: list[RegionSource] = []
    if settings.max_detections > 0:
        if detector is None:
            raise ValueError("the detector's boxes are asked for (max_detections > 0), and no detector is loaded")
        sources.append(DetectorRegions(detector, detector_id, settings))
    if settings.tiles:
        sources.append(TileRegions(settings.tiles))
    return sources
