"""Reduced precision (bf16, fp16) keeps boxes and embeddings where fp32 puts them.

Trained weights make the comparison mean something: the synthetic world's detector finds real
objects, and its CLIP embeds them. The CLIP ViT-B/32 architecture (random weights) checks the
released model's layer shapes under autocast too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.models import build_clip_vit_b32
from components.detector import Detection, load_detector
from components.devices import cpu_computes_bf16, pick_precision
from components.embedder import load_embedder
from components.synthetic import make_scene
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, WORLD_IMAGE_SIZE, DetectionSettings, IndexParams

REDUCED = ["bf16", "fp16"]


def test_auto_precision_follows_the_hardware() -> None:
    assert pick_precision("auto", "cuda") == pick_precision("auto", "cuda:1") == "fp16"
    assert pick_precision("auto", "cpu") == ("bf16" if cpu_computes_bf16() else "fp32")
    assert pick_precision("auto", "mps") == "fp32"
    assert pick_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        pick_precision("fp8", "cpu")


def test_a_bad_precision_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match="precision"):
        IndexParams(precision="int4")  # type: ignore[arg-type]


def scenes(count: int = 6) -> list:
    return [make_scene(seed)[0] for seed in range(1_000_000, 1_000_000 + count)]


def iou(a: Detection, b: Detection) -> float:
    width = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    height = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    overlap = width * height
    area = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - overlap
    return overlap / area


@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_precision_boxes_stay_within_iou_0_9(precision: str) -> None:
    settings = DetectionSettings(image_size=WORLD_IMAGE_SIZE, confidence=0.25)
    pictures = scenes()
    exact = load_detector(str(WORLD_DETECTOR), "cpu", "fp32").detect(pictures, settings)
    reduced = load_detector(str(WORLD_DETECTOR), "cpu", precision).detect(pictures, settings)
    assert sum(map(len, exact)) >= 10, "the world detector should find objects in these scenes"
    for found_exact, found_reduced in zip(exact, reduced, strict=True):
        assert len(found_reduced) == len(found_exact)
        for box in found_exact:
            best = max(found_reduced, key=lambda other: iou(box, other))
            assert best.class_id == box.class_id
            assert iou(box, best) >= 0.9


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # rows are unit length


@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_precision_embeddings_stay_within_cosine_0_999(precision: str, tmp_path_factory) -> None:
    pictures = scenes(4)
    texts = ["a photo of a red triangle", "a small blue circle beside a large green square"]
    for spec in (str(WORLD_EMBEDDER), str(build_clip_vit_b32(tmp_path_factory.getbasetemp() / "clip-vit-b32"))):
        exact, reduced = load_embedder(spec, "cpu", "fp32"), load_embedder(spec, "cpu", precision)
        assert cosines(exact.embed_images(pictures), reduced.embed_images(pictures)).min() >= 0.999, spec
        assert cosines(exact.embed_texts(texts), reduced.embed_texts(texts)).min() >= 0.999, spec


def test_precision_is_not_part_of_what_decides_reindexing() -> None:
    """bf16 and fp32 agree within tolerance: switching must not redo a whole collection."""
    from schemas.params import signature_of

    bf16, fp32 = IndexParams(precision="bf16"), IndexParams(precision="fp32")
    assert signature_of("d", "e", bf16) == signature_of("d", "e", fp32)


def test_the_benchmark_clip_is_the_released_architecture(tmp_path_factory) -> None:
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(build_clip_vit_b32(tmp_path_factory.getbasetemp() / "clip-vit-b32"))
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.vision_config.patch_size, config.vision_config.image_size, config.projection_dim) == (32, 224, 512)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (512, 12)
    assert Path(tmp_path_factory.getbasetemp() / "clip-vit-b32" / "model.safetensors").stat().st_size > 500e6
