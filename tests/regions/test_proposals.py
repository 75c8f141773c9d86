"""Class-agnostic proposals: boxes around what stands out, padded, best first, none for texture or the frame's edge."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from components.regions.proposals import (
    MIN_CONTRAST,
    PROPOSALS,
    ProposalRegions,
    distinct_blobs,
    padded,
    proposal_boxes,
    suppressed,
)
from components.regions.region import box_iou
from schemas.settings import PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS, PROPOSALS_DEFAULT, DetectionSettings


def textured(width: int, height: int, seed: int = 41) -> np.ndarray:
    """A grey, noisy background with no object in it: what a proposal must not box."""
    noise = np.random.default_rng(seed).normal(128, 10, size=(height, width, 3))
    return np.clip(noise, 0, 255).astype(np.uint8)


def scene(objects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]], size: tuple[int, int] = (256, 192)):
    picture = Image.fromarray(textured(*size))
    draw = ImageDraw.Draw(picture)
    for box, colour in objects:
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    return picture


def test_an_object_with_no_name_gets_a_padded_box_around_it_and_texture_gets_none() -> None:
    small, large = (60, 50, 76, 66), (150, 80, 210, 140)  # 16 px and 60 px squares
    picture = scene([(small, (220, 40, 40)), (large, (40, 80, 220))])
    boxes = proposal_boxes(picture, limit=20)
    for truth in (small, large):
        best = max(boxes, key=lambda box: box_iou(box, truth))
        # Padded on every side by the larger of the share and the minimum: the crop shows the outline.
        side = truth[2] - truth[0]
        pad = max(side * PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS)
        assert best == pytest.approx((truth[0] - pad, truth[1] - pad, truth[2] + pad, truth[3] + pad), abs=1.5)
    assert proposal_boxes(Image.fromarray(textured(256, 192)), limit=20) == []


def test_the_most_distinct_comes_first_and_the_limit_holds() -> None:
    faint, loud = (40, 40, 70, 70), (150, 100, 180, 130)
    picture = scene([(faint, (170, 150, 150)), (loud, (240, 20, 20))])
    _, scores = distinct_blobs(np.asarray(picture))
    assert min(scores) >= MIN_CONTRAST
    [first] = proposal_boxes(picture, limit=1)
    assert box_iou(first, padded(loud, 256, 192)) > 0.8
    assert len(proposal_boxes(picture, limit=2)) == 2
    assert proposal_boxes(picture, limit=0) == []


def test_a_blob_touching_the_frame_is_left_to_the_detector_and_the_tiles() -> None:
    picture = scene([((0, 60, 30, 90), (220, 40, 40)), ((100, 60, 130, 90), (220, 40, 40))])
    [box] = proposal_boxes(picture, limit=20)
    assert box_iou(box, padded((100, 60, 130, 90), 256, 192)) > 0.8


def test_a_large_photo_is_searched_shrunk_and_answered_in_its_own_pixels() -> None:
    """A 2,560 px photo is searched at 640 px (its thousands of texture blobs never ranked), boxed at full size."""
    truth = (1000, 800, 1160, 960)
    picture = scene([(truth, (40, 170, 60))], size=(2560, 1920))
    boxes = proposal_boxes(picture, limit=20)
    assert max(box_iou(box, padded(truth, 2560, 1920)) for box in boxes) > 0.85
    assert all(0 <= x1 < x2 <= 2560 and 0 <= y1 < y2 <= 1920 for x1, y1, x2, y2 in boxes)


def test_suppression_keeps_the_best_of_boxes_found_twice() -> None:
    boxes = [(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60)]
    assert suppressed(boxes, [0.5, 0.9, 0.1], iou=0.5, limit=10) == [1, 2]
    assert suppressed(boxes, [0.5, 0.9, 0.1], iou=0.5, limit=1) == [1]


def test_the_proposal_source_names_nothing_runs_no_model_and_answers_every_picture() -> None:
    source = ProposalRegions(limit=5)
    found = source.regions([scene([((60, 50, 90, 80), (220, 40, 40))]), Image.new("RGB", (64, 48), (90, 90, 90))])
    assert source.runs_a_model is False and len(found) == 2 and found[1] == []
    [region] = found[0]
    assert (region.source, region.proposer, region.class_name, region.class_id, region.score) == (
        "proposal",
        PROPOSALS,
        None,
        -1,
        1.0,
    )
    assert source.regions([]) == []


def test_proposals_enter_the_signature_only_when_asked_for_as_they_are_by_default() -> None:
    plain = DetectionSettings(proposals=0).fingerprint()
    assert "proposals" not in plain and "dedupe_iou" not in plain  # indexes made before keep their signature
    assert DetectionSettings().fingerprint()["proposals"]["limit"] == PROPOSALS_DEFAULT == 8
    asked = DetectionSettings(proposals=20).fingerprint()
    assert asked["proposals"] == {"limit": 20, "padding": [PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS]}
    assert asked != DetectionSettings(proposals=10).fingerprint()
    with pytest.raises(ValueError, match="less than or equal to 100"):
        DetectionSettings(proposals=101)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (9, 400), (3, 2000), (2000, 5)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_a_picture_too_small_or_thin_for_any_blob_has_no_proposal_and_is_no_error(
    size: tuple[int, int], mode: str
) -> None:
    """OpenCV's MSER raises on a picture under 3 px a side: with proposals on by default, an icon in a folder
    would have failed its whole chunk."""
    picture = Image.fromarray(textured(*size)).convert(mode)
    assert proposal_boxes(picture, limit=8) == []
    assert ProposalRegions(8).regions([picture, scene([((60, 50, 90, 80), (220, 40, 40))])])[0] == []
