"""Distinct photo-like JPEGs for benchmarks, made offline from the photos ultralytics ships.

Each file is a different random crop of a real photo (or of a synthetic scene), resized to COCO's
typical 640x480, colour-shifted and saved as a JPEG: real decode cost, distinct bytes and ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from components.evaluation.synthetic import make_scene

COCO_TYPICAL_SIZE = (640, 480)


def _bases() -> list[Image.Image]:
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    photos = [Image.open(path).convert("RGB") for path in sorted(assets.glob("*.jpg"))]
    scenes = [make_scene(seed)[0].resize((768, 768)) for seed in range(4)]
    return photos + scenes


def write_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs in `folder` (kept if already there, so reruns reuse them)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    for old in folder.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(seed)
    bases = _bases()
    width, height = COCO_TYPICAL_SIZE
    for number in range(count):
        base = bases[number % len(bases)]
        scale = rng.uniform(0.6, 1.0)
        crop_w, crop_h = int(base.width * scale), int(base.width * scale * height / width)
        crop_h = min(crop_h, base.height)
        left = int(rng.integers(0, base.width - crop_w + 1))
        top = int(rng.integers(0, base.height - crop_h + 1))
        picture = base.crop((left, top, left + crop_w, top + crop_h)).resize((width, height))
        shifted = np.clip(np.asarray(picture, dtype=np.int16) + rng.integers(-20, 21, size=3), 0, 255)
        Image.fromarray(shifted.astype(np.uint8)).save(folder / f"photo-{number:06d}.jpg", quality=90)
    return folder
