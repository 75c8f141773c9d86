"""Registering and decoding image files, good and bad."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.pipeline.images import (
    DEFAULT_MAX_DECODED_BYTES,
    ImageDecodeError,
    ImageTooLarge,
    check_decoded_size,
    check_decodes,
    decode_rgb,
    register_images,
)
from tests.conftest import write_scene
from tests.photo_formats import PHOTO_WRITERS, STORED_BLOCK, STORED_SIZE, TURNED_BLOCK, TURNED_SIZE


def test_register_hashes_bytes_and_reads_size(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "a.jpg", seed=1, size=(160, 120))
    records, skipped = register_images([path], source="test")
    assert skipped == []
    (record,) = records
    assert record.image_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record.width, record.height) == (160, 120)
    assert record.num_bytes == path.stat().st_size
    assert record.source == "test" and record.uri == str(path.resolve())


def test_bad_files_are_skipped_with_path_and_reason(tmp_path: Path) -> None:
    good = write_scene(tmp_path / "good.jpg", seed=2)
    text = tmp_path / "text.jpg"
    text.write_text("this is not an image")
    whole = write_scene(tmp_path / "whole.jpg", seed=5, size=(400, 300)).read_bytes()
    whole_path = tmp_path / "whole.jpg"
    whole_path.unlink()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) * 6 // 10])  # header intact, scan data cut
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    png = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:20_000])
    records, skipped = register_images([good, text, truncated, empty, png], source="test")
    assert [r.uri for r in records] == [str(good.resolve())]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"text.jpg", "truncated.jpg", "empty.png", "cut.png"}
    assert "not a decodable image" in reasons["text.jpg"]
    assert "truncated" in reasons["truncated.jpg"].lower()


def test_repeated_bytes_are_registered_once(tmp_path: Path) -> None:
    first = write_scene(tmp_path / "a.jpg", seed=3)
    copy = tmp_path / "b.jpg"
    copy.write_bytes(first.read_bytes())
    records, skipped = register_images([first, copy], source="test")
    assert len(records) == 1
    assert skipped[0].path == str(copy) and "same bytes as" in skipped[0].reason


def test_exif_rotated_jpeg_has_the_size_a_viewer_shows(tmp_path: Path) -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 40))  # a red stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    assert check_decodes(path) == (40, 80)
    shown = decode_rgb(path)
    assert shown.size == (40, 80)
    top_rows = np.asarray(shown)[:8]
    assert top_rows[..., 0].mean() > 150  # the stripe is on top after rotation


def test_transparent_png_decodes_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    assert decode_rgb(path).getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16)).save(path)
    assert decode_rgb(path).getpixel((5, 5)) == (128, 128, 128)


def test_decode_of_a_missing_or_broken_file_raises_a_named_error(tmp_path: Path) -> None:
    broken = tmp_path / "x.jpg"
    broken.write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode_rgb(broken)


def write_bomb(path: Path) -> Path:
    """A tiny PNG whose header declares 50,000 x 50,000 pixels (2.5 gigapixels)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 50_000, 50_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR checksum
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_skipped_not_decoded(tmp_path: Path) -> None:
    path = write_bomb(tmp_path / "bomb.png")
    records, skipped = register_images([path], source="test")
    assert records == [] and "not a decodable image" in skipped[0].reason
    assert "decompression bomb" in skipped[0].reason


def write_many_pixels(path: Path, side: int = 9_400) -> Path:
    """A 1-bit PNG of side x side pixels: ~11 KB on disk, 337 MiB once decoded to RGB (issue 40).

    88.4 million pixels lie just under Pillow's own limit (89.5 million), which counts pixels, not bytes.
    """
    Image.new("1", (side, side)).save(path)
    return path


def test_a_small_file_of_many_pixels_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    many = write_many_pixels(tmp_path / "many.png")
    assert many.stat().st_size < 30_000
    photo = write_scene(tmp_path / "photo.jpg", seed=4, size=(640, 480))
    for refused in (lambda: check_decodes(many), lambda: decode_rgb(many), lambda: check_decodes(many.read_bytes())):
        with pytest.raises(ImageTooLarge, match=r"9,400 x 9,400 would take 337 MiB decoded .* cap of 256 MiB"):
            refused()
    records, skipped = register_images([photo, many], source="test")
    assert [record.uri for record in records] == [str(photo.resolve())]
    ((path, reason),) = [(item.path, item.reason) for item in skipped]
    assert path == str(many) and reason.startswith("too many pixels: 9,400 x 9,400")
    assert decode_rgb(photo).size == (640, 480)  # an ordinary photo still passes the default cap


def test_the_cap_counts_the_decoded_rgb_bytes_not_the_files_mode(tmp_path: Path) -> None:
    """4 bytes a pixel (Pillow's RGB in memory), whatever the file holds: a 1-bit file costs as much as a colour one."""
    cap = 100 * 100 * 4
    check_decoded_size(100, 100, cap)
    with pytest.raises(ImageTooLarge):
        check_decoded_size(101, 100, cap)
    path = write_many_pixels(tmp_path / "bits.png", side=100)
    assert decode_rgb(path, max_decoded_bytes=cap).size == (100, 100)
    with pytest.raises(ImageTooLarge, match="100 x 100"):
        decode_rgb(path, max_decoded_bytes=cap - 1)
    records, skipped = register_images([path], source="test", max_decoded_bytes=cap - 1)
    assert records == [] and skipped[0].path == str(path) and "over the cap" in skipped[0].reason
    # A 61-megapixel full-frame photo (9504 x 6336) passes the default; Pillow's largest (89.5 megapixels) does not.
    check_decoded_size(9504, 6336, DEFAULT_MAX_DECODED_BYTES)
    with pytest.raises(ImageTooLarge):
        check_decoded_size(9459, 9459, DEFAULT_MAX_DECODED_BYTES)


def _cmyk(path: Path) -> None:
    Image.new("CMYK", (12, 8), (0, 255, 255, 0)).save(path, format="JPEG")  # pure red in CMYK


def _palette_with_transparency(path: Path) -> None:
    image = Image.new("P", (12, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(path, transparency=0)


def _grey(path: Path) -> None:
    Image.new("L", (12, 8), 200).save(path, format="JPEG")


def _animated(path: Path) -> None:
    frames = [Image.new("RGB", (12, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _one_pixel(path: Path) -> None:
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)


@pytest.mark.parametrize(
    ("name", "make", "size", "pixel"),
    [
        ("cmyk.jpg", _cmyk, (12, 8), "red"),
        ("palette.png", _palette_with_transparency, (12, 8), "red"),
        ("grey.jpg", _grey, (12, 8), "grey"),
        ("animated.gif", _animated, (12, 8), "red"),  # first frame
        ("animated.webp", _animated, (12, 8), "red"),
        ("tiny.png", _one_pixel, (1, 1), "red"),
    ],
)
def test_unusual_but_valid_images_register_and_decode_to_rgb(
    tmp_path: Path, name: str, make: object, size: tuple[int, int], pixel: str
) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    images, skipped = register_images([path], "test")
    assert skipped == [] and (images[0].width, images[0].height) == size
    decoded = decode_rgb(path)
    assert decoded.mode == "RGB" and decoded.size == size
    r, g, b = decoded.getpixel((0, 0))
    if pixel == "red":
        assert r > 200 and g < 60 and b < 60, (r, g, b)
    else:
        assert abs(r - 200) < 8 and r == g == b


def test_transparent_pixels_decode_onto_white_whatever_carries_the_transparency(tmp_path: Path) -> None:
    """An alpha channel (RGBA, LA) or a palette's transparent entry: each becomes white, not its hidden colour."""
    black_but_clear = {
        "rgba.png": Image.new("RGBA", (4, 4), (0, 0, 0, 0)),
        "la.png": Image.new("LA", (4, 4), (0, 0)),
    }
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    for name, picture in black_but_clear.items():
        picture.save(tmp_path / name)
    palette.save(tmp_path / "palette.png", transparency=0)
    for name in (*black_but_clear, "palette.png"):
        assert decode_rgb(tmp_path / name).getpixel((0, 0)) == (255, 255, 255), name


def test_registering_on_several_threads_gives_the_same_records_and_skips_in_order(tmp_path: Path) -> None:
    """Duplicates keep the first path in list order, bad files and bombs are skipped, whichever thread reads them."""
    paths = [write_scene(tmp_path / f"{n:02d}.jpg", seed=n % 7, size=(96, 64)) for n in range(20)]
    (tmp_path / "bad.jpg").write_text("not an image")
    bomb = write_bomb(tmp_path / "bomb.png")
    paths[5:5] = [tmp_path / "bad.jpg", bomb]
    one = register_images(paths, source="test")
    several = register_images(paths, source="test", threads=4)
    assert several == one
    records, skipped = several
    assert len(records) == 7  # seeds 0-6 repeat: the first file of each seed is kept
    assert [record.uri for record in records] == [str(path.resolve()) for path in paths[:5] + paths[7:9]]
    assert {Path(item.path).name for item in skipped[:2]} == {"bad.jpg", "bomb.png"}
    assert all("same bytes as" in item.reason for item in skipped[2:])


@pytest.mark.parametrize("name", sorted(PHOTO_WRITERS))
def test_every_photo_format_registers_and_decodes_as_a_viewer_shows_it(tmp_path: Path, name: str) -> None:
    write, turned = PHOTO_WRITERS[name]
    path = tmp_path / name
    write(path, 128)
    images, skipped = register_images([path], "test")
    size = TURNED_SIZE if turned else STORED_SIZE
    assert skipped == [] and (images[0].width, images[0].height) == size
    decoded = decode_rgb(path)
    assert decoded.mode == "RGB" and decoded.size == size
    x1, y1, x2, y2 = TURNED_BLOCK if turned else STORED_BLOCK
    r, g, b = decoded.getpixel(((x1 + x2) // 2, (y1 + y2) // 2))  # the block's centre, where a viewer shows it
    assert r > 180 and g < 70 and b < 70, (r, g, b)
