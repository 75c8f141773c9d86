"""A query as a vector: a text, a picture, or a region of a picture, through the index's embedder.

The `query` flow and `cropsearch serve` both encode here, so one query gives one vector either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from components.models.embedder import Embedder
from components.pipeline.crops import padded_region

Box = tuple[float, float, float, float]


def check_box(box: Sequence[float], width: int, height: int) -> Box:
    """A region x1, y1, x2, y2 in the picture's pixels (as a viewer shows it); ValueError naming `box` otherwise."""
    if len(box) != 4:
        raise ValueError(f"box: give four numbers x1,y1,x2,y2, got {len(box)}")
    x1, y1, x2, y2 = (float(value) for value in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise ValueError("box: coordinates must be finite numbers")
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(
            f"box: ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not a region inside the {width}x{height} picture "
            "(0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height)"
        )
    return x1, y1, x2, y2


def text_vector(embedder: Embedder, text: str) -> np.ndarray:
    return embedder.embed_texts([text])[0]


def picture_vector(embedder: Embedder, picture: Image.Image, box: Sequence[float] | None = None) -> np.ndarray:
    """The picture's vector, or that of the region `box` cut from it as indexing cuts a crop."""
    if box is not None:
        region = check_box(box, picture.width, picture.height)
        picture = picture.crop(padded_region(region, picture.width, picture.height, 0.0))  # as indexing cuts
    return embedder.embed_images([picture])[0]
