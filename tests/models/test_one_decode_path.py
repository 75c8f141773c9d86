"""One decode per photo feeds every model the same pixels the old three-decode path did (issue 22, item 3).

The chunk's model stage reads and decodes each photo once; the detector gets that picture, and
CLIP the whole picture and each crop cut from it, as its file's JPEG holds it (encoded once, in
memory, never read back from the file). These tests hold that path to the references: boxes from
the detector run on the photo decoded on its own, and vectors from CLIP's own processor run on
each crop file read from disk. With the world models (trained, so their boxes and vectors mean
something) and with tiny random ones (other shapes and sizes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.evaluation.synthetic import make_scene
from components.models.detector import load_detector
from components.models.devices import decide_machine
from components.models.embedder import load_embedder
from components.pipeline import stages
from components.pipeline.crops import to_crop_records
from components.pipeline.images import decode_rgb, register_images
from components.regions.detector import regions_of
from components.store.writer import StoreWriter
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, ChunkConfig
from schemas.records import CropRecord
from schemas.settings import BatchSettings, DetectionSettings, ObjectStoreSettings
from tests.conftest import ultralytics_assets

# Boxes: the same network on the same pixels; 0.99 leaves room only for float noise between batch shapes.
MIN_IOU = 0.99
# Vectors: CLIP's processor on the same decoded JPEG bytes: the bar, though the pictures
# are equal to the last bit, so only float summation order could move a vector.
MIN_COSINE = 0.999


def _iou(a: CropRecord, b: CropRecord) -> float:
    width = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    height = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = width * height
    return inter / ((a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter)


def _photos(folder: Path) -> list[Path]:
    """Four world scenes, the two real photos ultralytics ships (810x1080, 1280x720), and a portrait scene."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(4):
        path = folder / f"scene-{seed}.png"
        make_scene(seed)[0].save(path)
        paths.append(path)
    portrait = folder / "portrait.jpg"
    make_scene(9)[0].resize((200, 330)).save(portrait, quality=90)
    return [*paths, *ultralytics_assets(), portrait]


def _config(detector: str, embedder: str, crops: Path, settings: DetectionSettings) -> ChunkConfig:
    return ChunkConfig(
        detector=detector,
        embedders=[embedder],
        device="cpu",
        precision="fp32",
        detection=settings,
        batching=BatchSettings(detect_batch_size=3, embed_batch_size=5, decode_threads=2),
        crops_uri=str(crops),
        object_store=ObjectStoreSettings(),
    )


@pytest.fixture(params=["world", "tiny"])
def models(request: pytest.FixtureRequest, tiny_yolo: Path, tiny_clip: Path) -> tuple[str, str, DetectionSettings]:
    if request.param == "world":
        return str(WORLD_DETECTOR), str(WORLD_EMBEDDER), DetectionSettings(image_size=256, proposals=0)
    # Random weights find nothing at normal thresholds: these settings make them box something.
    # The detector's boxes alone: the reference path below knows no other region source.
    settings = DetectionSettings(confidence=0.0001, max_detections=6, min_box_pixels=2, proposals=0)
    return str(tiny_yolo), str(tiny_clip), settings


def test_the_one_decode_path_gives_the_reference_boxes_vectors_and_rows(
    tmp_path: Path, models: tuple[str, str, DetectionSettings]
) -> None:
    detector_spec, embedder_spec, settings = models
    images, _ = register_images(_photos(tmp_path / "photos"), "t")
    config = _config(detector_spec, embedder_spec, tmp_path / "crops", settings)
    machine = decide_machine("cpu", "fp32", config.batching)
    detector, embedder = load_detector(detector_spec, machine), load_embedder(embedder_spec, machine)
    work = stages.model_stage(images, stages.ChunkModels(detector, "d", {"e": embedder}, machine), config)
    assert not work.skipped and len(work.crops) >= len(images)  # every photo, and some boxes to compare

    crops_of: dict[str, list[CropRecord]] = {}
    for crop in work.crops:
        crops_of.setdefault(crop.image_id, []).append(crop)
    # The reference decodes each photo on its own and detects in the same batches (a batch's
    # photos share one letterbox shape, so batching is part of what a box is).
    decoded = [decode_rgb(Path(image.uri)) for image in images]
    size = config.batching.detect_batch_size or 1
    found = [
        boxes
        for start in range(0, len(images), size)
        for boxes in detector.detect(decoded[start : start + size], settings)
    ]
    reference_vectors = {}
    for image, pixels, detections in zip(images, decoded, found, strict=True):
        expected = to_crop_records(image, regions_of(detections, "d"), settings)
        got = crops_of.get(image.image_id, [])
        assert len(got) == len(expected), image.uri
        for mine, theirs in zip(got, expected, strict=True):
            assert mine.class_id == theirs.class_id and _iou(mine, theirs) >= MIN_IOU, image.uri
            assert Path(mine.uri).is_file()
        pictures = [pixels, *(decode_rgb(Path(crop.uri)) for crop in got)]  # the files a hit shows
        for key, vector in zip(
            [image.image_id, *(c.crop_id for c in got)], embedder.embed_images(pictures), strict=True
        ):
            reference_vectors[key] = vector

    store = StoreWriter(str(tmp_path / "db"))
    stages.write_stage(store, images, work.crops, work.embeddings, "sig", {"e": embedder_spec})
    rows = store._open("embeddings").to_arrow().to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(reference_vectors)  # one row each, no more, no fewer
    for row in rows:
        cosine = float(np.dot(row["vector"], reference_vectors[row["id"]]))
        assert cosine >= MIN_COSINE, (row["kind"], row["id"], cosine)
    assert store.counts() == {"images": len(images), "crops": len(work.crops), "embeddings": len(rows)}
