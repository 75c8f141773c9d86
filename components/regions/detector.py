"""The detector as a region source: its boxes, with the class names it has, as regions."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from components.models.detector import Detection, Detector
from components.regions.region import Region
from schemas.records import CropSource
from schemas.settings import DetectionSettings


def regions_of(detections: Sequence[Detection], detector_id: str, source: CropSource = "detector") -> list[Region]:
    """A detector's boxes of one picture as regions, each with its class and confidence."""
    return [
        Region(d.x1, d.y1, d.x2, d.y2, source, detector_id, d.class_name, d.class_id, d.confidence) for d in detections
    ]


def source_of(detector: Detector) -> CropSource:
    """`open-vocabulary` for a detector of words (YOLOE, YOLO-World: `YoloDetector.open_vocabulary`), else
    `detector`; a plug-in may say it is one with an `open_vocabulary` attribute of its own."""
    return "open-vocabulary" if getattr(detector, "open_vocabulary", False) else "detector"


class DetectorRegions:
    """A loaded `Detector` run with the run's detection settings: one batched forward pass per call."""

    runs_a_model = True

    def __init__(self, detector: Detector, detector_id: str, settings: DetectionSettings) -> None:
        self.detector, self.detector_id, self.settings = detector, detector_id, settings
        self.source = source_of(detector)

    def regions(self, pictures: Sequence[Image.Image]) -> list[list[Region]]:
        found = self.detector.detect(pictures, self.settings)
        return [regions_of(detections, self.detector_id, self.source) for detections in found]
