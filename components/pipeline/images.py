"""Reading image files safely: register (hash + size), and decode as a viewer shows them."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from components.errors import CropsearchError
from components.pipeline.formats import register_decoders
from components.pipeline.prefetch import mapped_ahead
from schemas.records import ImageRecord, SkippedFile

# EXIF orientations 5-8 turn the picture a quarter: a viewer shows width and height swapped.
_QUARTER_TURNS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112

# What a decoded picture costs is its pixels, not its file: Pillow holds RGB at 32 bits a pixel (RGBX),
# whatever the file's own mode. Measured: a 9,400 x 9,400 1-bit PNG of 11 KB took 424 MiB to decode to
# RGB (88 MiB for its 1-byte-a-pixel source, 337 MiB for the RGB). Pillow's own limit counts pixels
# (89.5 million: 256 MiB at 3 bytes a pixel), so that picture, 88.4 million pixels, passed it.
DECODED_BYTES_PER_PIXEL = 4
# 256 MiB of decoded pixels is 67 megapixels: a 40-megapixel photo (153 MiB), a 61-megapixel full-frame
# camera's (230 MiB) and a phone's 63-megapixel panorama pass; the 9,400 x 9,400 PNG above (337 MiB) does not.
DEFAULT_MAX_DECODED_BYTES = 256 * 2**20


class ImageDecodeError(CropsearchError):
    """A file that cannot be decoded as an image; the message says why."""


class ImageChangedError(ImageDecodeError):
    """A photo's bytes are no longer those registered (and hashed) earlier in the run."""


class ImageTooLarge(ImageDecodeError):
    """A picture whose decoded pixels would take more memory than the cap allows (known from its header)."""


def decoded_bytes(width: int, height: int) -> int:
    """The memory a picture of this size takes once decoded to RGB."""
    return width * height * DECODED_BYTES_PER_PIXEL


def check_decoded_size(width: int, height: int, max_decoded_bytes: int) -> None:
    """Refuse a picture whose RGB pixels would take more than `max_decoded_bytes`, before paying for them."""
    needed = decoded_bytes(width, height)
    if needed > max_decoded_bytes:
        raise ImageTooLarge(
            f"too many pixels: {width:,} x {height:,} would take {needed / 2**20:,.0f} MiB decoded "
            f"({DECODED_BYTES_PER_PIXEL} bytes a pixel), over the cap of {max_decoded_bytes / 2**20:,.0f} MiB"
        )


# `warnings.catch_warnings` swaps the process's warning filters, so two threads opening files at once
# could each restore the other's: files open one at a time (reading the header only, ~0.1 ms),
# while the decoding itself runs on many threads (`components.stages`).
_FILTERS_SWAP = threading.Lock()


def _open(path: Path | BinaryIO, max_decoded_bytes: int) -> Image.Image:
    """The image with only its header read, refused here if its decoded pixels would pass the cap.

    Every decode in this module opens through here, so no caller can decode before the cap is checked.
    """
    register_decoders()
    with _FILTERS_SWAP, warnings.catch_warnings():
        # Pillow only warns between its two pixel limits; a bomb is a bad file, not a warning.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as error:  # its text names the file object, not the file
            raise ImageDecodeError("not a decodable image: no installed decoder knows its format") from error
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise ImageTooLarge(f"not a decodable image: {error}") from error
        except OSError as error:
            raise ImageDecodeError(f"cannot read: {error}") from error
    try:
        check_decoded_size(image.width, image.height, max_decoded_bytes)
    except ImageTooLarge:
        image.close()
        raise
    return image


@contextmanager
def _as_decode_error() -> Iterator[None]:
    """Pillow reports broken data as OSError, SyntaxError or ValueError; callers see one named error."""
    try:
        yield
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"not a decodable image: {error}") from error


def viewer_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as a viewer shows them: the image's size with its EXIF rotation still to apply.

    Pillow turns some formats itself (TIFF on load, HEIF and AVIF as their decoders read them) and
    then drops the orientation tag, so this is right before or after loading as long as it is
    asked where `ImageOps.exif_transpose` would be.
    """
    width, height = image.size
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def check_decodes(path: Path | bytes, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> tuple[int, int]:
    """Prove the file decodes and return its viewer size, without paying for a full decode.

    JPEGs are decoded in draft mode (DCT scaling, 1/8 size; their size is read from the header
    first) and PNGs have their chunk checksums verified; both read every byte, so a truncated file
    fails here instead of in a model batch. Other formats are decoded in full, and sized after
    loading, since some (TIFF) apply their orientation only then. A picture over `max_decoded_bytes`
    is refused from its header first (a PNG's EXIF lookup alone decodes it).
    """
    with _open(_readable(path), max_decoded_bytes) as image, _as_decode_error():
        is_png, is_jpeg = image.format == "PNG", image.format == "JPEG"
        header_size = viewer_size(image) if is_png or is_jpeg else None
        if is_jpeg:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        if not is_png:
            image.load()
        size = header_size or viewer_size(image)
        if size[0] < 1 or size[1] < 1:
            raise ImageDecodeError("image has no pixels")
    if is_png:
        with _open(_readable(path), max_decoded_bytes) as image, _as_decode_error():  # verify() must come first
            image.verify()
    return size


def _readable(source: Path | bytes) -> Path | BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def read_as_registered(record: ImageRecord) -> bytes:
    """The photo's bytes, read once, if they are still the ones its id was hashed from.

    Every stage decodes from bytes checked this way, so a file overwritten during a run is skipped
    (the next run indexes its new content) instead of storing new pixels under the old bytes' id.
    """
    data = Path(record.uri).read_bytes()
    if hashlib.sha256(data).hexdigest() != record.image_id:
        raise ImageChangedError(f"{record.uri} changed since it was registered in this run; the next run indexes it")
    return data


def decode_rgb(path: Path | BinaryIO, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Full decode to 8-bit RGB, oriented as a viewer shows it; transparency goes onto white.

    A picture whose RGB pixels would take more than `max_decoded_bytes` is refused (`ImageTooLarge`)
    from its header, before any pixel is decoded.
    """
    with _open(path, max_decoded_bytes) as image, _as_decode_error():
        image.seek(0)  # first frame of an animation
        image.load()
        # In place: otherwise an upright photo is copied whole, and `convert` below copies it again.
        ImageOps.exif_transpose(image, in_place=True)
        oriented = image
    if oriented.mode == "RGB":
        return oriented
    if oriented.mode in ("RGBA", "LA", "P", "PA") and _has_alpha(oriented):
        background = Image.new("RGBA", oriented.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, oriented.convert("RGBA")).convert("RGB")
    if oriented.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        return oriented.point(lambda value: value / 256).convert("L").convert("RGB")
    return oriented.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _inspect(path: Path, max_decoded_bytes: int) -> tuple[int, int, str, int] | SkippedFile:
    """Width, height, sha256 and size of one file, or why it cannot be indexed: all from one read of its bytes."""
    try:
        data = path.read_bytes()
        width, height = check_decodes(data, max_decoded_bytes)
        return width, height, hashlib.sha256(data).hexdigest(), len(data)
    except ImageDecodeError as error:
        return SkippedFile(path=str(path), reason=str(error))
    except OSError as error:
        return SkippedFile(path=str(path), reason=f"cannot read: {error}")


def register_images(
    paths: Iterable[Path], source: str, threads: int = 1, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Hash and size every file; files that do not decode, would decode past `max_decoded_bytes`, or repeat
    earlier bytes, are skipped with a reason.

    Files are read on `threads` threads (hashing and JPEG decoding release the GIL); the records
    come back in the order of `paths`, so "earlier" means the same as with one thread.
    """
    ordered = list(paths)
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    first_path_of: dict[str, Path] = {}
    inspect = partial(_inspect, max_decoded_bytes=max_decoded_bytes)
    for path, inspected in zip(ordered, mapped_ahead(inspect, ordered, threads), strict=True):
        if isinstance(inspected, SkippedFile):
            skipped.append(inspected)
            continue
        width, height, image_id, num_bytes = inspected
        if image_id in first_path_of:
            skipped.append(SkippedFile(path=str(path), reason=f"same bytes as {first_path_of[image_id]}"))
            continue
        first_path_of[image_id] = path
        records.append(
            ImageRecord(
                image_id=image_id,
                uri=str(path.resolve()),
                source=source,
                width=width,
                height=height,
                num_bytes=num_bytes,
            )
        )
    return records, skipped
