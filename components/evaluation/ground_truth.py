"""Ground truth for retrieval evaluation: COCO's annotation files, or the synthetic world's own.

Both become the same `EvalQuery` list: one "a photo of a {name}" query per category whose relevant
images hold at least one instance, and one query per caption whose only relevant image is its own.
An image's size bucket for a category is that of its largest instance of the category, so an image
is "small" only when all its instances of the category are small (COCO: area < 32^2 < medium < 96^2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from components.evaluation.metrics import ALL, EvalQuery
from components.evaluation.synthetic import Scene, size_bucket

CATEGORY_TEMPLATE = "a photo of a {name}"


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
