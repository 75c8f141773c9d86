"""A small generated world with exact answers: textured scenes holding coloured shapes of every size.

Each scene is a photo-like 256 x 256 picture (noisy, blotchy background) with 2-5 objects from
12 classes (4 colours x 3 shapes), sized from tiny to large, drawn in order so later objects may
partly hide earlier ones. Boxes and captions are exact, so retrieval can be scored like COCO.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SCENE_SIZE = 256
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
CLASS_NAMES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
# COCO's size buckets by box area: small < 32^2, medium < 96^2, large otherwise.
SMALL_AREA, LARGE_AREA = 32**2, 96**2
MIN_SIDE, MAX_SIDE = 10, 150


@dataclass(frozen=True)
class WorldObject:
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)


@dataclass(frozen=True)
class Scene:
    file_name: str
    objects: tuple[WorldObject, ...]
    caption: str


def size_bucket(area: float) -> str:
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < LARGE_AREA else "large"


def phrase(class_name: str) -> str:
    """How a caption and a query name a class: 'a red triangle'."""
    return f"a {class_name}"


def _background(rng: np.random.Generator) -> Image.Image:
    """Muted blotches plus fine noise: texture without the saturated colours objects use."""
    coarse = rng.uniform(70, 170, size=(8, 8, 3)).astype(np.float32)
    tint = rng.uniform(0.8, 1.1, size=3).astype(np.float32)
    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((SCENE_SIZE, SCENE_SIZE), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    grey = smooth.mean(axis=2, keepdims=True)
    pixels = 0.6 * grey + 0.4 * smooth  # desaturate
    pixels = pixels * tint + rng.normal(0, 12, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour: tuple) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)


def _caption(objects: list[WorldObject]) -> str:
    words = [f"{size_bucket(o.area).replace('medium', 'medium-sized')} {o.class_name}" for o in objects]
    listed = ", ".join(f"a {w}" for w in words[:-1]) + (f" and a {words[-1]}" if len(words) > 1 else f"a {words[0]}")
    return f"a photo of {listed}"


def make_scene(seed: int) -> tuple[Image.Image, Scene]:
    """One scene and its exact annotation; objects are listed in drawing order (later ones on top)."""
    rng = np.random.default_rng(seed)
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    jitter = rng.integers(-18, 19, size=(6, 3))
    objects = []
    for index in range(int(rng.integers(2, 6))):
        side = float(math.exp(rng.uniform(math.log(MIN_SIDE), math.log(MAX_SIDE))))
        width, height = side * rng.uniform(0.85, 1.15), side * rng.uniform(0.85, 1.15)
        x1 = float(rng.uniform(0, SCENE_SIZE - width))
        y1 = float(rng.uniform(0, SCENE_SIZE - height))
        colour_name = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour_name], jitter[index], strict=True))
        box = (round(x1), round(y1), round(x1 + width), round(y1 + height))
        _draw(draw, shape, box, colour)
        objects.append(WorldObject(f"{colour_name} {shape}", *map(float, box)))
    return image, Scene(f"scene-{seed:06d}.jpg", tuple(objects), _caption(objects))


def write_world(folder: Path, seeds: range) -> list[Scene]:
    """Write scenes as JPEGs plus `annotations.json` (boxes, classes, captions) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for seed in seeds:
        image, scene = make_scene(seed)
        image.save(folder / scene.file_name, quality=92)
        scenes.append(scene)
    (folder / "annotations.json").write_text(json.dumps([asdict(scene) for scene in scenes]))
    return scenes


def read_world(folder: Path) -> list[Scene]:
    raw = json.loads((folder / "annotations.json").read_text())
    return [Scene(item["file_name"], tuple(WorldObject(**o) for o in item["objects"]), item["caption"]) for item in raw]
