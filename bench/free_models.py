"""Models that cost nothing, for measuring what the pipeline itself costs per photo.

`fixed_boxes_detector` finds the same eight boxes in every photo without looking at it, and
`constant_embedder` maps every picture and text to one unit vector of CLIP ViT-B/32's size: an
index run with them spends its time on reading, decoding, cutting, saving and writing alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from components.models.detector import Detection
from schemas.settings import DetectionSettings

BOXES_PER_PHOTO = 8
DIM = 512


class FixedBoxesDetector:
    """Eight boxes on a grid over the photo, whatever it shows: two rows of four."""

    def __init__(self) -> None:
        self.class_names = {0: "thing"}

    def detect(self, images: Sequence[Image.Image], settings: DetectionSettings) -> list[list[Detection]]:
        return [self._boxes(image.width, image.height) for image in images]

    @staticmethod
    def _boxes(width: int, height: int) -> list[Detection]:
        cell_w, cell_h = width / 4, height / 2
        return [
            Detection(x * cell_w + 4, y * cell_h + 4, (x + 1) * cell_w - 4, (y + 1) * cell_h - 4, 0, "thing", 0.9)
            for y in range(2)
            for x in range(4)
        ]


class ConstantEmbedder:
    """Every picture and text at the same unit vector."""

    dim = DIM

    def __init__(self) -> None:
        self._vector = np.zeros(DIM, dtype=np.float32)
        self._vector[0] = 1.0

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.tile(self._vector, (len(images), 1))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self._vector, (len(texts), 1))


def fixed_boxes_detector(device: str) -> FixedBoxesDetector:
    return FixedBoxesDetector()


def constant_embedder(device: str) -> ConstantEmbedder:
    return ConstantEmbedder()
