"""Which files are photos: the formats indexed, by file suffix, and the Pillow plug-ins that decode them.

People's photo folders hold what their cameras and phones write: JPEG (also as .jfif, .jpe, and
cameras' multi-picture .mpo), HEIC/HEIF (every iPhone since 2017), PNG, GIF, WebP, TIFF, AVIF and
a few more. A suffix listed here is indexed where this install's Pillow (with pi-heif for HEIF) has
an opener for its format; a file that then fails to decode is skipped with its reason, and files
with any other suffix are counted as ignored, so nothing leaves a run unmentioned.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

# Pillow's format name -> the suffixes (lower case) files of that format carry.
PHOTO_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif", ".mpo"),  # Pillow's JPEG opener reads cameras' MPO too
    "PNG": (".png", ".apng"),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "TIFF": (".tif", ".tiff"),
    "HEIF": (".heic", ".heif", ".hif"),
    "AVIF": (".avif",),
    "JPEG2000": (".jp2", ".j2k", ".jpx", ".jpf"),
    "QOI": (".qoi",),
    "TGA": (".tga",),
    "PPM": (".ppm", ".pgm", ".pbm", ".pnm"),
    "PSD": (".psd",),
    "ICO": (".ico",),
}


@functools.cache
def register_decoders() -> None:
    """Teach Pillow HEIF (pi-heif); once per process, before any file is opened.

    Without it Pillow does not know HEIC at all (ultralytics registers it too, but only once its
    patched `Image.open` has met an unidentified file).
    """
    import pi_heif

    pi_heif.register_heif_opener()


def decodable_suffixes() -> frozenset[str]:
    """The suffixes of the photo formats this install can decode."""
    from PIL import Image

    register_decoders()
    Image.init()
    return frozenset(suffix for name, suffixes in PHOTO_FORMATS.items() if name in Image.OPEN for suffix in suffixes)


def describe_ignored(counts: dict[str, int]) -> str:
    """'3 files that are not photos (.txt x2, .json)', '1 file that is not a photo (.txt)'; '' for none."""
    total = sum(counts.values())
    if not total:
        return ""
    kinds = ", ".join(
        f"{suffix or 'no suffix'} x{count}" if count > 1 else suffix or "no suffix"
        for suffix, count in _by_count(counts.items())
    )
    return f"{total} files that are not photos ({kinds})" if total > 1 else f"1 file that is not a photo ({kinds})"


def _by_count(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(items, key=lambda item: (-item[1], item[0]))
