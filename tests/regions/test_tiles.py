"""Tiles' geometry: levels, overlap, whole pixels inside the picture, and pictures too small for a level."""

from __future__ import annotations

import itertools
import random

import pytest
from PIL import Image

from components.regions.tiles import TILES, TileRegions, spans, tile_boxes
from schemas.settings import TILE_OVERLAP


def test_a_level_is_that_many_tiles_a_side_from_edge_to_edge_overlapping_by_a_quarter() -> None:
    assert spans(256, 2) == [(0, 146), (110, 256)]  # 256 / 1.75 = 146.3 px tiles, 109.7 px apart
    assert spans(640, 3) == [(0, 256), (192, 448), (384, 640)]  # 640 / 2.5 = 256 px tiles, 64 px shared
    for length in (97, 256, 480, 640, 1333):
        for level in range(2, 9):
            found = spans(length, level)
            size = length / (level - (level - 1) * TILE_OVERLAP)
            assert len(found) == level and found[0][0] == 0 and found[-1][1] == length
            assert all(abs((end - start) - size) <= 1 for start, end in found), (length, level)
            for (_, end), (start, _) in itertools.pairwise(found):
                assert abs((end - start) - TILE_OVERLAP * size) <= 1, (length, level)  # each border shared


def test_an_object_no_bigger_than_the_overlap_lies_whole_in_some_tile() -> None:
    """Why there is an overlap: no object that small is cut in two by every tile of a level."""
    chance = random.Random(41)
    for _ in range(2000):
        length, level = chance.randint(64, 2000), chance.randint(2, 8)
        found = spans(length, level)
        shared = min(end - start for (_, end), (start, _) in itertools.pairwise(found))
        start = chance.randint(0, length - shared)
        assert any(left <= start and start + shared <= right for left, right in found), (length, level, start)


def test_a_picture_gets_each_levels_grid_row_by_row_inside_it() -> None:
    boxes = tile_boxes(640, 480, [2, 3])
    assert len(boxes) == 4 + 9
    assert boxes[:2] == [(0, 0, 366, 274), (274, 0, 640, 274)]  # level 2, first row: 640 / 1.75 wide, 480 / 1.75 high
    assert all(0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 for x1, y1, x2, y2 in boxes)
    assert {(x2, y2) for _, _, x2, y2 in boxes} >= {(640, 480)}  # the corner reached at every level
    assert len(set(boxes)) == len(boxes)


def test_a_picture_too_small_for_a_level_gets_the_tiles_it_has_room_for_and_never_an_empty_one() -> None:
    assert tile_boxes(1, 1, [2, 3, 8]) == [(0, 0, 1, 1)]
    assert spans(2, 3) == [(0, 1), (1, 2)]
    assert spans(5, 8) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    for width, height in ((1, 7), (3, 2), (9, 9), (15, 4)):
        boxes = tile_boxes(width, height, range(2, 9))
        assert boxes and all(0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height for x1, y1, x2, y2 in boxes)


def test_the_tile_source_cuts_each_picture_by_its_own_size_with_no_model() -> None:
    source = TileRegions([2])
    wide, tall = Image.new("RGB", (200, 100)), Image.new("RGB", (50, 120))
    regions = source.regions([wide, tall])
    assert source.runs_a_model is False and [len(found) for found in regions] == [4, 4]
    assert [(r.x1, r.y1, r.x2, r.y2) for r in regions[1]] == list(tile_boxes(50, 120, [2]))
    first = regions[0][0]
    assert (first.source, first.proposer, first.class_name, first.class_id) == ("tile", TILES, None, -1)
    assert first.score == 1.0
    assert source.regions([]) == []


@pytest.mark.parametrize("levels", [[1], [9], [0, 2]])
def test_tile_levels_outside_two_to_eight_are_refused_naming_the_whole_photo(levels: list[int]) -> None:
    from pydantic import ValidationError

    from schemas.settings import DetectionSettings

    with pytest.raises(ValidationError, match="tile levels are 2 to 8 \\(level 1 is the whole photo"):
        DetectionSettings(tiles=levels)
    assert DetectionSettings(tiles=[3, 2, 3]).tiles == [2, 3]
