"""JPEGs of stored images and crops, made once per id and size and kept while they are asked for.

Ids are hashes of content, so a picture for an id never changes: it is cached here and may be
cached by browsers for good (`Cache-Control: immutable`).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image

from components.pipeline.crops import padded_box
from components.pipeline.images import DEFAULT_MAX_DECODED_BYTES, ImageDecodeError, decode_rgb
from components.store.objects import ObjectFiles
from schemas.records import CropRecord, ImageRecord

SMALLEST, LARGEST = 16, 2048
_QUALITY = 85


class PictureMissing(LookupError):
    """The record is in the index but its file can no longer be read."""


def check_size(size: int) -> int:
    if not SMALLEST <= size <= LARGEST:
        raise ValueError(f"size: {size} is not between {SMALLEST} and {LARGEST} pixels")
    return size


def jpeg(picture: Image.Image, size: int) -> bytes:
    """The picture within size x size (never enlarged), as a JPEG."""
    picture = picture.copy()
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=_QUALITY)
    return buffer.getvalue()


class Pictures:
    """JPEG bytes by (kind, id, size), least recently used dropped first past `budget_bytes`."""

    def __init__(
        self, files: ObjectFiles, budget_bytes: int = 64_000_000, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> None:
        self.files = files
        self.budget_bytes = budget_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self._cached: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def _decode(self, uri: str) -> Image.Image:
        try:
            return decode_rgb(self.files.open(uri), self.max_decoded_bytes)
        except (ImageDecodeError, OSError) as error:
            raise PictureMissing(f"cannot read {uri}: {error}") from error

    def _remembered(self, key: tuple[str, str, int], make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._cached:
                self._cached.move_to_end(key)
                return self._cached[key]
        data = make()
        with self._lock:
            if key not in self._cached:
                self._cached[key] = data
                self._held += len(data)
                while self._held > self.budget_bytes and len(self._cached) > 1:
                    self._held -= len(self._cached.popitem(last=False)[1])
        return data

    # The records are looked up only when a picture is not cached: a cached one costs no index read.

    def of_image(self, image_id: str, size: int, record: Callable[[], ImageRecord]) -> bytes:
        return self._remembered(("image", image_id, size), lambda: jpeg(self._decode(record().uri), size))

    def of_crop(self, crop_id: str, size: int, records: Callable[[], tuple[CropRecord, ImageRecord]]) -> bytes:
        """The crop's file, or the box cut from its parent (`records` gives both) when the file is gone."""

        def make() -> bytes:
            crop, parent = records()
            try:
                return jpeg(self._decode(crop.uri), size)
            except PictureMissing:
                picture = self._decode(parent.uri)
                return jpeg(picture.crop(padded_box(crop, picture.width, picture.height, 0.0)), size)

        return self._remembered(("crop", crop_id, size), make)
