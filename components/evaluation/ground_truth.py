"""Ground truth for retrieval evaluation: COCO's annotation files, or the synthetic world's own.

Both become the same `EvalQuery` list: one "a photo of a {name}" query per category whose relevant
images hold at least one instance, and one query per caption whose only relevant image is its own.
An image's size bucket for a category is that of its largest instance of the category, so an image
is "small" only when all its instances of the category are small (COCO: area < 32^2 < medium < 96^2).

`sized_queries` asks for a class at one size ("a small red triangle", the world CLIP's own object
phrase) and splits the classes into those the detector names and those it cannot: what the
region-source comparison of `cropsearch eval --unknown-classes` scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.metrics import ALL, SIZE_BUCKETS, EvalQuery
from components.evaluation.synthetic import Scene, size_bucket

CATEGORY_TEMPLATE = "a photo of a {name}"
# How the world's captions and its CLIP's training texts name a size: "a medium-sized red triangle".
SIZED_TEMPLATE = "a {size} {name}"
SIZE_WORDS = {"small": "small", "medium": "medium-sized", "large": "large"}
NAMED, UNNAMED = "named", "unnamed"


@dataclass(frozen=True)
class Instance:
    """One annotated object: its photo (file name), class, box in pixels and area (COCO: its mask's, as it buckets)."""

    file_name: str
    class_name: str
    box: tuple[float, float, float, float]
    area: float


def _largest_bucket(areas: Iterable[float]) -> str:
    return size_bucket(max(areas))


def coco_queries(
    instances_json: Path, captions_json: Path | None, indexed: set[str], captions_per_image: int = 1
) -> list[EvalQuery]:
    """Category queries (80) and caption queries over the images in `indexed` (file names).

    COCO has ~5 captions per image; `captions_per_image` keeps the first N of each image's.
    """
    instances = json.loads(instances_json.read_text())
    names = {image["id"]: image["file_name"] for image in instances["images"] if image["file_name"] in indexed}
    areas: dict[int, dict[str, list[float]]] = {}
    for annotation in instances["annotations"]:
        if annotation.get("iscrowd") or annotation["image_id"] not in names:
            continue
        per_image = areas.setdefault(annotation["category_id"], {})
        per_image.setdefault(names[annotation["image_id"]], []).append(float(annotation["area"]))
    queries = [
        EvalQuery(
            CATEGORY_TEMPLATE.format(name=category["name"]),
            {name: _largest_bucket(found) for name, found in areas.get(category["id"], {}).items()},
        )
        for category in sorted(instances["categories"], key=lambda c: c["id"])
    ]
    if captions_json is not None:
        captions = json.loads(captions_json.read_text())
        taken: dict[int, int] = {}
        for annotation in sorted(captions["annotations"], key=lambda a: a["id"]):
            image_id = annotation["image_id"]
            if image_id in names and taken.get(image_id, 0) < captions_per_image:
                taken[image_id] = taken.get(image_id, 0) + 1
                queries.append(EvalQuery(annotation["caption"].strip(), {names[image_id]: ALL}, group="caption"))
    return queries


def world_queries(scenes: Iterable[Scene], class_names: Iterable[str]) -> list[EvalQuery]:
    """The synthetic world's category and caption queries, built exactly like COCO's."""
    scenes = list(scenes)
    queries = []
    for class_name in class_names:
        relevant = {
            scene.file_name: _largest_bucket(o.area for o in scene.objects if o.class_name == class_name)
            for scene in scenes
            if any(o.class_name == class_name for o in scene.objects)
        }
        queries.append(EvalQuery(CATEGORY_TEMPLATE.format(name=class_name), relevant))
    queries += [EvalQuery(scene.caption, {scene.file_name: ALL}, group="caption") for scene in scenes]
    return queries


def world_instances(scenes: Iterable[Scene]) -> list[Instance]:
    return [
        Instance(scene.file_name, o.class_name, (o.x1, o.y1, o.x2, o.y2), o.area)
        for scene in scenes
        for o in scene.objects
    ]


def coco_instances(instances_json: Path, indexed: set[str]) -> list[Instance]:
    """COCO's annotated objects in the images of `indexed` (file names), crowds left out as in `coco_queries`."""
    instances = json.loads(instances_json.read_text())
    names = {image["id"]: image["file_name"] for image in instances["images"] if image["file_name"] in indexed}
    categories = {category["id"]: category["name"] for category in instances["categories"]}
    found = []
    for a in instances["annotations"]:
        if a.get("iscrowd") or a["image_id"] not in names:
            continue
        x, y, width, height = map(float, a["bbox"])
        found.append(
            Instance(
                names[a["image_id"]], categories[a["category_id"]], (x, y, x + width, y + height), float(a["area"])
            )
        )
    return found


def sized_queries(instances: Iterable[Instance], named: set[str]) -> list[EvalQuery]:
    """One query per class and size it comes in ("a small red triangle"), grouped by whether the detector names it.

    Relevant images are all those holding the class, each in the bucket of its largest instance, as
    for category queries; each query is scored in its own size's bucket, so an image whose object
    of the class is larger is neither a hit nor a miss for "a small ..." (`EvalQuery.bucket`).
    A class outside `named` (hidden from the detector, or one it never knew) is "unnamed".
    """
    areas: dict[str, dict[str, list[float]]] = {}
    for instance in instances:
        areas.setdefault(instance.class_name, {}).setdefault(instance.file_name, []).append(instance.area)
    queries = []
    for class_name in sorted(areas):
        relevant = {file_name: _largest_bucket(found) for file_name, found in areas[class_name].items()}
        for bucket in SIZE_BUCKETS:
            if bucket in relevant.values():
                text = SIZED_TEMPLATE.format(size=SIZE_WORDS[bucket], name=class_name)
                group = NAMED if class_name in named else UNNAMED
                queries.append(EvalQuery(text, relevant, group=group, bucket=bucket))
    return queries
