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
    where the source names nothing (a tile); `score` is the detector's confidence, 1 for a tile.
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


class RegionSource(Protocol):
    """Proposes regions in a batch of decoded RGB pictures: one list per picture, in the pictures' order.

    `runs_a_model` says whether a call is a model's forward pass (counted in the run's model and
    detector batches, as the detector's always were); tiles are geometry, and count as none.
    """

    runs_a_model: bool

    def regions(self, pictures: Sequence[Image.Image]) -> list[list[Region]]: ...
