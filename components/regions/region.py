"""The region and the one protocol every region source implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from schemas.records import CropSource


@dataclass(frozen=True)
class Region:
    """One box a source proposes in a picture, in that picture's pixels, with what proposed it and what it is.

    `proposer` is the detector's id or the method's name ("tiles"): with `source`, it tells regions
    of the same box from different sources apart (their crop ids differ). `class_name` is None
    where the source names nothing (a proposal, a tile); `score` is the detector's confidence, 1 for those.
    """

    x1: float
    y1: float
    x2: float
    y2: float
    source: CropSource
    proposer: str
    class_name: str | None = None
    class_id: int = -1
    score: float = 1.0
    # The box around the thing itself where the region is grown beyond it (a padded proposal): what
    # another source's box of the same thing is compared with. None: the box is the thing's.
    core: tuple[float, float, float, float] | None = None

    @property
    def object_box(self) -> tuple[float, float, float, float]:
        """The box of what the region holds, without the context a source added around it."""
        return self.core or (self.x1, self.y1, self.x2, self.y2)


class RegionSource(Protocol):
    """Proposes regions in a batch of decoded RGB pictures: one list per picture, in the pictures' order.

    `runs_a_model` says whether a call is a model's forward pass (counted in the run's model and
    detector batches, as the detector's always were); tiles are geometry, and count as none.
    """

    runs_a_model: bool

    def regions(self, pictures: Sequence[Image.Image]) -> list[list[Region]]: ...


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes x1, y1, x2, y2 (0 when both are empty)."""
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    overlap = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0
