"""Class-agnostic proposals: boxes around whatever stands out in a photo, found without a class name or weights.

A detector cuts out only what it has a name for; a proposal is a region that differs from its
surroundings, whatever it is. The method is MSER (maximally stable extremal regions, OpenCV's core
`cv2.MSER_create`), run on the photo's brightness and on its colour saturation: an extremal region
is a blob darker or brighter than everything around it, so a red triangle on a grey table is one
whatever it is called. Each blob is scored by how far its mean colour (CIELAB) lies from the ring
around it, the most distinct first; near-duplicates are suppressed (non-maximum suppression), at
most `limit` kept, and each box is padded, since a crop cut tight to an object loses its outline
and CLIP reads shapes by their outline.

Why MSER and not selective search or Felzenszwalb segments (issue 41 suggested both): both live in
OpenCV's contrib build, which would replace the `opencv-python` that ultralytics installs (two
packages owning one `cv2` folder). Measured on 100 held-out world scenes (docs/findings.md), MSER
on the two channels covers 0.83 of the small objects (IoU >= 0.5) in 7 ms a scene; Felzenszwalb
segments 0.89 in 20 ms; selective search (fast) 0.86 in 201 ms, with 221 boxes to rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from components.regions.region import Region, box_iou
from schemas.settings import PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS

# The proposer every proposal records (`CropRecord.detector`), with the method's version: a change to
# how proposals are found is a new name, so the index signature and the crop ids follow it.
PROPOSALS = "mser-v1"
# Proposals are found on the photo shrunk to this longer side (a 12-megapixel phone photo has
# thousands of stable blobs, mostly texture), and their boxes scaled back to the photo's pixels.
WORKING_SIDE = 640
# A blob narrower than this (at the working size) is texture, not an object: a COCO small object is
# up to 32 px, the world's smallest 10 px.
MIN_SIDE = 6
# A blob covering this much of the photo is the background or the whole photo, which has its own vector.
MAX_AREA_SHARE = 0.8
# Two blobs overlapping this much are one object found twice (on two channels, or nested regions).
SUPPRESS_IOU = 0.5
# The ring a blob's colour is compared with: this share of its longer side around its box (2 px at least).
RING_SHARE = 0.25
# A blob whose colour lies closer than this to its ring's (CIELAB distance; 2.3 is just noticeable) is
# texture. Measured on 150 world scenes' top proposals: every one that boxed an object stood out by
# more than 50, and a quarter of those that boxed nothing by less than 20.
MIN_CONTRAST = 20.0
# A blob touching the photo's edge is mostly background running out of the frame: 84% of the world
# scenes' proposals that boxed nothing did, 6% of those that boxed an object. An object cut by the
# edge is left to the detector and the tiles. One pixel: OpenCV's MSER never includes the outermost row
# or column, so a blob running out of the frame ends one pixel short of it.
EDGE_PIXELS = 1


def suppressed(boxes: Sequence[Sequence[float]], scores: Sequence[float], iou: float, limit: int) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first, at most `limit`."""
    kept: list[int] = []
    for index in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if len(kept) == limit:
            break
        if all(box_iou(boxes[index], boxes[other]) < iou for other in kept):
            kept.append(index)
    return kept


def padded(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """A blob's box grown on each side by `PROPOSAL_PADDING` of its size (at least the minimum), inside the photo."""
    x1, y1, x2, y2 = box
    pad_x = max((x2 - x1) * PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS)
    pad_y = max((y2 - y1) * PROPOSAL_PADDING, PROPOSAL_PADDING_MIN_PIXELS)
    return max(0.0, x1 - pad_x), max(0.0, y1 - pad_y), min(float(width), x2 + pad_x), min(float(height), y2 + pad_y)


def distinct_blobs(rgb: np.ndarray) -> tuple[list[tuple[int, int, int, int]], list[float]]:
    """Every stable blob of an RGB picture's brightness and saturation that stands out, as a box and by how much.

    The score is the CIELAB distance between the blob's mean colour and its surrounding ring's (the
    ring's box less the blob's pixels): about 2.3 is a just noticeable difference. A photo has
    a thousand or two blobs a channel, nested, a million pixels in all: their colours are summed
    in one pass over them all, not blob by blob.
    """
    height, width = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    # Sums over any rectangle in O(1): the ring's total is its box's total less the blob's pixels.
    summed = cv2.integral(lab)
    channels = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1])
    found = [blob for channel in channels for blob in zip(*cv2.MSER_create().detectRegions(channel), strict=True)]
    blobs = [(pixels, box) for pixels, box in found if _may_be_an_object(box, width, height)]
    if not blobs:
        return [], []
    x, y, w, h = np.array([box for _, box in blobs], dtype=np.int64).T
    margin = np.maximum(2, np.round(RING_SHARE * np.maximum(w, h)).astype(np.int64))
    left, top = np.maximum(0, x - margin), np.maximum(0, y - margin)
    right, bottom = np.minimum(width, x + w + margin), np.minimum(height, y + h + margin)
    box_totals = summed[bottom, right] - summed[top, right] - summed[bottom, left] + summed[top, left]
    counts = np.array([len(pixels) for pixels, _ in blobs])
    every_pixel = np.concatenate([pixels for pixels, _ in blobs])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    blob_totals = np.add.reduceat(lab[every_pixel[:, 1], every_pixel[:, 0]].astype(np.float64), starts, axis=0)
    ring_counts = (right - left) * (bottom - top) - counts
    ringed = ring_counts > 0
    ring_means = (box_totals - blob_totals) / np.where(ringed, ring_counts, 1)[:, None]
    contrast = np.linalg.norm(blob_totals / counts[:, None] - ring_means, axis=1)
    standing_out = np.flatnonzero(ringed & (contrast >= MIN_CONTRAST))
    boxes = [(int(x[i]), int(y[i]), int(x[i] + w[i]), int(y[i] + h[i])) for i in standing_out]
    return boxes, [float(contrast[i]) for i in standing_out]


def _may_be_an_object(box: Sequence[int], width: int, height: int) -> bool:
    """Neither texture (too narrow) nor background (too large, or running out of the frame)."""
    x, y, w, h = box
    if min(w, h) < MIN_SIDE or w * h > MAX_AREA_SHARE * width * height:
        return False
    return not (min(x, y) <= EDGE_PIXELS or x + w >= width - EDGE_PIXELS or y + h >= height - EDGE_PIXELS)


Box = tuple[float, float, float, float]


def proposals_of(picture: Image.Image, limit: int) -> list[tuple[Box, Box]]:
    """Up to `limit` blobs that stand out most in `picture`, most distinct first: each one's box and its padded box,
    in the picture's pixels."""
    scale = min(1.0, WORKING_SIDE / max(picture.width, picture.height))
    width, height = round(picture.width * scale), round(picture.height * scale)
    # A blob off the frame's edge and MIN_SIDE wide needs this much room (and OpenCV's MSER fails on a
    # picture under 3 px a side): an icon or a 1 px tracking GIF has no proposal, and is no error.
    if min(width, height) < MIN_SIDE + 2 * (EDGE_PIXELS + 1):
        return []
    working = picture if scale == 1.0 else picture.resize((width, height))
    boxes, scores = distinct_blobs(np.asarray(working.convert("RGB")))
    found = []
    for index in suppressed(boxes, scores, SUPPRESS_IOU, limit):
        x1, y1, x2, y2 = (value / scale for value in boxes[index])
        found.append(((x1, y1, x2, y2), padded((x1, y1, x2, y2), picture.width, picture.height)))
    return found


def proposal_boxes(picture: Image.Image, limit: int) -> list[Box]:
    """Up to `limit` padded boxes around what stands out most in `picture`, in its pixels, most distinct first."""
    return [box for _, box in proposals_of(picture, limit)]


class ProposalRegions:
    """Up to `limit` class-agnostic proposals per picture: no model is loaded, and a call is no forward pass."""

    runs_a_model = False

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def regions(self, pictures: Sequence[Image.Image]) -> list[list[Region]]:
        return [
            [
                Region(*box, source="proposal", proposer=PROPOSALS, core=core)
                for core, box in proposals_of(picture, self.limit)
            ]
            for picture in pictures
        ]
