"""A query region: a box with room inside the picture, or a ValueError naming `box` (the server's 400)."""

from __future__ import annotations

import pytest

from components.search.encoding import check_box


def test_a_box_inside_the_picture_is_taken_as_floats_edges_included() -> None:
    assert check_box([0, 0, 64, 48], 64, 48) == (0.0, 0.0, 64.0, 48.0)
    assert check_box((1.5, 2, 3, 4.25), 64, 48) == (1.5, 2.0, 3.0, 4.25)


@pytest.mark.parametrize(
    "box",
    [
        (10, 5, 10, 20),  # zero width: a line, no pixels to embed
        (5, 10, 20, 10),  # zero height
        (7, 7, 7, 7),  # a point
        (20, 5, 10, 20),  # x reversed
        (5, 20, 10, 10),  # y reversed
        (-1, 0, 10, 10),  # left of the picture
        (0, -0.5, 10, 10),  # above it
        (0, 0, 64.5, 10),  # past its right edge
        (0, 0, 10, 49),  # past its bottom edge
    ],
)
def test_a_box_without_room_inside_the_picture_is_refused_by_name(box: tuple[float, ...]) -> None:
    # padded_region would widen a zero-width box to one pixel column and embed that: refused here instead.
    with pytest.raises(ValueError, match=r"^box: .* is not a region inside the 64x48 picture"):
        check_box(box, 64, 48)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((1, 2, 3), r"^box: give four numbers x1,y1,x2,y2, got 3"),
        ((1, 2, 3, 4, 5), r"^box: give four numbers x1,y1,x2,y2, got 5"),
        ((float("nan"), 0, 10, 10), r"^box: coordinates must be finite"),
        ((0, 0, float("inf"), 10), r"^box: coordinates must be finite"),
    ],
)
def test_a_box_that_is_not_four_finite_numbers_is_refused_by_name(box: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_box(box, 64, 48)
