"""Real files of every photo format cameras, phones and editors write, made in the test.

Each photo is a grey 120x80 picture with a red block at x 10-40, y 10-30 of its stored pixels.
Formats that carry EXIF are written with orientation 6 ("turn 90 degrees clockwise to view"), so
a viewer shows them 80x120 with the block at x 50-70, y 10-40: a test can tell whether the
orientation was applied, by size and by where a detector finds the block.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

STORED_SIZE = (120, 80)
STORED_BLOCK = (10, 10, 40, 30)
TURNED_SIZE = (80, 120)
TURNED_BLOCK = (50, 10, 70, 40)  # (x1, y1, x2, y2) once orientation 6 is applied


def picture(colour: tuple[int, int, int] = (220, 20, 20), grey: int = 128) -> Image.Image:
    image = Image.new("RGB", STORED_SIZE, (grey, grey, grey))
    image.paste(colour, STORED_BLOCK)
    return image


def _turned() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


Writer = Callable[[Path, int], None]  # writes a picture with this grey background to the path


def _pillow(format_name: str, **options: object) -> Writer:
    return lambda path, grey: picture(grey=grey).save(path, format=format_name, **options)


def _heif(path: Path, grey: int) -> None:
    import pillow_heif  # the encoder (x265); cropsearch itself decodes with pi-heif

    pillow_heif.from_pillow(picture(grey=grey)).save(path, quality=95, exif=_turned())


def _animated_gif(path: Path, grey: int) -> None:
    frames = [picture(grey=grey), picture((20, 20, 220), grey)]  # the first frame is the one indexed
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multi_picture(path: Path, grey: int) -> None:
    image = picture(grey=grey)
    image.save(path, format="MPO", save_all=True, append_images=[image], exif=_turned(), quality=95)


# file name -> (writer, whether the file carries orientation 6)
PHOTO_WRITERS: dict[str, tuple[Writer, bool]] = {
    "camera.jpg": (_pillow("JPEG", exif=_turned(), quality=95), True),
    "CAMERA2.JPG": (_pillow("JPEG", exif=_turned(), quality=95), True),
    "web.jpeg": (_pillow("JPEG", quality=95), False),
    "saved.jfif": (_pillow("JPEG", exif=_turned(), quality=95), True),
    "stereo.mpo": (_multi_picture, True),
    "iphone.heic": (_heif, True),
    "IPHONE2.HEIF": (_heif, True),
    "screenshot.png": (_pillow("PNG", exif=_turned()), True),
    "web.webp": (_pillow("WEBP", exif=_turned(), lossless=True), True),
    "animated.gif": (_animated_gif, False),
    "scan.tiff": (_pillow("TIFF", exif=_turned()), True),
    "scan2.tif": (_pillow("TIFF"), False),
    "modern.avif": (_pillow("AVIF", exif=_turned(), quality=95), True),
    "old.bmp": (_pillow("BMP"), False),
    "archive.jp2": (_pillow("JPEG2000"), False),
    "fast.qoi": (_pillow("QOI"), False),
    "render.tga": (_pillow("TGA"), False),
    "raw.ppm": (_pillow("PPM"), False),
}
NOT_PHOTOS = {"notes.txt": b"hello", "meta.json": b"{}", "more.json": b"[]", "live.mov": b"\0" * 64}


def write_every_format(folder: Path) -> dict[str, bool]:
    """Write one file per format (and a few that are not photos) into `folder`; name -> turned?

    Each photo gets its own shade of grey, so no two files hold the same bytes (those are indexed once).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for shade, (name, (write, _)) in enumerate(PHOTO_WRITERS.items()):
        write(folder / name, 100 + 2 * shade)
    for name, content in NOT_PHOTOS.items():
        (folder / name).write_bytes(content)
    return {name: turned for name, (_, turned) in PHOTO_WRITERS.items()}
