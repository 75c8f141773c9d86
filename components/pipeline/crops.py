"""Crop geometry and materialization: regions to CropRecords, and CropRecords to files."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from components.regions.region import Region
from components.store.objects import ObjectFiles
from schemas.records import CropRecord, CropSource, ImageRecord
from schemas.settings import DetectionSettings, is_object_store_uri

CROP_SUFFIX = ".jpg"
_JPEG_QUALITY = 92


def crop_id_for(
    image_id: str,
    detector_id: str,
    class_id: int,
    box: tuple[float, float, float, float],
    source: CropSource = "detector",
) -> str:
    """Deterministic id: the same region of the same bytes from the same source always gets the same id.

    Rounding to whole pixels keeps ids stable across tiny numeric differences between runs. A
    detector's crop is hashed as it was before there were other sources, so the crops of indexes
    made then keep their ids (their files and vectors) and re-runs find them done. Every other
    source's is hashed with its name in front: an image id is 64 hex digits and a source name is
    not, so a tile and a detector box with the same corners (or class, or proposer) never share an id.
    """
    rounded = ",".join(str(round(value)) for value in box)
    prefix = "" if source == "detector" else f"{source}:"
    return hashlib.sha256(f"{prefix}{image_id}|{detector_id}|{class_id}|{rounded}".encode()).hexdigest()


def to_crop_records(image: ImageRecord, regions: Sequence[Region], settings: DetectionSettings) -> list[CropRecord]:
    """Clamp boxes to the image, drop slivers, and give each survivor its id and area share.

    Any source's regions: a region with no class keeps an empty class name (and class id -1).
    """
    records: dict[str, CropRecord] = {}
    for found in regions:
        x1, y1 = max(0.0, found.x1), max(0.0, found.y1)
        x2, y2 = min(float(image.width), found.x2), min(float(image.height), found.y2)
        if min(x2 - x1, y2 - y1) < settings.min_box_pixels:
            continue
        crop_id = crop_id_for(image.image_id, found.proposer, found.class_id, (x1, y1, x2, y2), found.source)
        records.setdefault(
            crop_id,
            CropRecord(
                crop_id=crop_id,
                image_id=image.image_id,
                detector=found.proposer,
                source=found.source,
                class_id=found.class_id,
                class_name=found.class_name or "",
                confidence=min(1.0, max(0.0, found.score)),
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                area_fraction=min(1.0, (x2 - x1) * (y2 - y1) / (image.width * image.height)),
            ),
        )
    return list(records.values())


def padded_box(crop: CropRecord, width: int, height: int, padding: float) -> tuple[int, int, int, int]:
    """The pixel rectangle to cut for a crop: its box grown by `padding` of its size on each side."""
    return padded_region((crop.x1, crop.y1, crop.x2, crop.y2), width, height, padding)


def padded_region(
    box: tuple[float, float, float, float], width: int, height: int, padding: float
) -> tuple[int, int, int, int]:
    """The pixel rectangle to cut for a box x1, y1, x2, y2: grown by `padding`, inside the image, at least 1 px."""
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) * padding, (y2 - y1) * padding
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(width, round(x2 + pad_x)), min(height, round(y2 + pad_y))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_path(crops_dir: Path, crop_id: str) -> Path:
    return Path(_under(str(crops_dir), crop_id))


def crops_root(crops_uri: Path | str) -> str:
    """The folder crop uris start with: an s3:// URI as it is, a local folder resolved (once per batch of crops)."""
    return str(crops_uri) if is_object_store_uri(str(crops_uri)) else str(Path(crops_uri).resolve())


def _under(root: str, crop_id: str) -> str:
    """Where a crop's file lives under `root`: `<root>/<id[:2]>/<id>.jpg`.

    Two-level fan-out keeps folders small at millions of crops.
    """
    return f"{root.rstrip('/')}/{crop_id[:2]}/{crop_id}{CROP_SUFFIX}"


def crop_jpegs(parent: Image.Image, boxes: Sequence[tuple[int, int, int, int]]) -> list[bytes]:
    """The JPEG bytes of each pixel rectangle (left, top, right, bottom) of one decoded RGB parent.

    OpenCV encodes them, from views of one BGR copy of the parent. Its libjpeg-turbo writes the
    bytes Pillow's wrote at the same quality (the files and vectors of crops made before are those
    made now: tests/pipeline/test_crops.py), and it lets go of the GIL while it works, which
    Pillow's JPEG encoder does not: two threads cutting and encoding a photo's eight crops took
    1.2 ms a photo with OpenCV, 2.0 ms with Pillow (1.7 ms for both on one thread).
    """
    import cv2  # here, not at the top: the search server imports this module's geometry and never encodes

    bgr = cv2.cvtColor(np.asarray(parent), cv2.COLOR_RGB2BGR)
    quality = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    encoded = []
    for left, top, right, bottom in boxes:
        done, data = cv2.imencode(CROP_SUFFIX, bgr[top:bottom, left:right], quality)
        if not done:
            raise ValueError(f"OpenCV could not encode the crop {left, top, right, bottom} as JPEG")
        encoded.append(data.tobytes())
    return encoded


def decoded_crop_jpeg(data: bytes) -> Image.Image:
    """A crop's JPEG bytes, as `crop_jpegs` made them, decoded to the RGB picture its file shows.

    Only for those bytes: made here from an RGB picture, they need none of `decode_rgb`'s care
    for files from outside (format probing, pixel limits, orientation, other modes), which cost
    more than a third of the decode of a photo's eight crops (2.6 ms against 1.9).
    """
    picture = Image.open(io.BytesIO(data), formats=("JPEG",))
    picture.load()
    return picture


def encoded_crops(
    parent: Image.Image, crops: Sequence[CropRecord], root: str, padding: float
) -> list[tuple[CropRecord, bytes]]:
    """Each crop of one decoded parent with its file's uri (`<root>/<id[:2]>/<id>.jpg`) and its JPEG bytes.

    `root` comes from `crops_root`, made once for many photos: resolving a local folder is a
    `realpath`, 2% of py-spy's samples of the pipeline's own work when it was made per photo.
    """
    boxes = [padded_box(crop, parent.width, parent.height, padding) for crop in crops]
    return [
        (crop.model_copy(update={"uri": _under(root, crop.crop_id)}), data)
        for crop, data in zip(crops, crop_jpegs(parent, boxes), strict=True)
    ]


def materialize_crops(
    parent: Image.Image,
    crops: Sequence[CropRecord],
    crops_dir: Path | str,
    padding: float,
    files: ObjectFiles | None = None,
) -> list[CropRecord]:
    """Save each crop of one decoded parent as `<crops_dir>/<id[:2]>/<crop_id>.jpg`; return records with their uri.

    `crops_dir` may be an `s3://` URI (written through `files`): crops on a cluster land where every
    worker and every query reads them. Each file is written whole (local files through a
    temporary name), so a killed write never leaves a file that looks complete.
    """
    files = files or ObjectFiles()
    saved = []
    for crop, data in encoded_crops(parent, crops, crops_root(crops_dir), padding):
        files.write_bytes(crop.uri, data)
        saved.append(crop)
    return saved


def caption_for(crops: Sequence[CropRecord]) -> str:
    """A caption from the detections, e.g. 'this image contains 2 person, 1 tv'.

    Crops without a class (proposals, tiles) are not objects found in the photo: they are not counted.
    """
    counts = Counter(crop.class_name for crop in crops if crop.class_name)
    if not counts:
        return "no objects detected"
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "this image contains " + ", ".join(f"{count} {name}" for name, count in ordered)
