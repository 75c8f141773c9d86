"""Tiles: each photo cut into overlapping grids, one per level, as regions that need no model and no name.

A tile holds whatever is in it, named or not: CLIP finds a guitar in the tile around it though the
detector has no word for guitars. Level n is an n x n grid whose neighbours overlap by
`TILE_OVERLAP` of a tile's side (`schemas.settings` says why 25%); the tiles of a level cover the
photo exactly, edge to edge, in whole pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from components.regions.region import Region
from schemas.settings import TILE_OVERLAP

# The proposer every tile records (`CropRecord.detector`): tiles of the same box are the same crop
# whichever levels a run asks for, so asking for one more level leaves the others' ids as they were.
TILES = "tiles"


def spans(length: int, level: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int]]:
    """The [start, end) pixel spans of `level` tiles along a side of `length` pixels, overlapping by `overlap`.

    Each tile is length / (level - (level - 1) * overlap) long, the next starting (1 - overlap) of
    a tile further; edges are rounded to whole pixels, the first starts at 0 and the last ends at
    `length`. A side too short for the level gives fewer spans: empty ones and repeats are left out.
    """
    size = length / (level - (level - 1) * overlap)
    stride = size * (1 - overlap)
    found: list[tuple[int, int]] = []
    for index in range(level):
        start = round(index * stride)
        end = length if index == level - 1 else min(length, round(index * stride + size))
        if end > start and (start, end) not in found:
            found.append((start, end))
    return found


def tile_boxes(width: int, height: int, levels: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Every tile of every level of a `width` x `height` picture as x1, y1, x2, y2, row by row, level by level."""
    boxes: list[tuple[int, int, int, int]] = []
    for level in levels:
        for top, bottom in spans(height, level):
            for left, right in spans(width, level):
                if (box := (left, top, right, bottom)) not in boxes:
                    boxes.append(box)
    return boxes


class TileRegions:
    """The tiles of `levels` in each picture: geometry alone, so nothing is loaded and no call is a forward pass."""

    runs_a_model = False

    def __init__(self, levels: Sequence[int]) -> None:
        self.levels = tuple(levels)

    def regions(self, pictures: Sequence[Image.Image]) -> list[list[Region]]:
        return [
            [
                Region(*box, source="tile", proposer=TILES)
                for box in tile_boxes(picture.width, picture.height, self.levels)
            ]
            for picture in pictures
        ]
