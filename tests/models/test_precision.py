"""Reduced precision (bf16, fp16) keeps boxes and embeddings where fp32 puts them.

Trained weights make the comparison mean something: the synthetic world's detector finds real
objects, and its CLIP embeds them. The CLIP ViT-B/32 architecture (random weights) checks the
released model's layer shapes under autocast too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.models import build_clip_vit_b32
from components.evaluation.synthetic import make_scene
from components.models.detector import Detection, load_detector
from components.models.devices import CpuFeatures, cpu_features, decide_machine, pick_precision
from components.models.embedder import load_embedder
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, IndexParams
from schemas.settings import DetectionSettings

REDUCED = ["bf16", "fp16"]


def cpu(**flags: bool) -> CpuFeatures:
    features = {"amx": False, "avx512_bf16": False, "avx512": False, "avx2": True} | flags
    return CpuFeatures(model="test CPU", **features)


def test_auto_precision_follows_the_hardware() -> None:
    assert pick_precision("auto", "cuda") == pick_precision("auto", "cuda:1") == "fp16"
    assert pick_precision("auto", "mps") == "fp32"
    assert pick_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        pick_precision("fp8", "cpu")


def test_auto_precision_on_a_cpu_follows_its_bf16_instructions_whatever_cpu_runs_the_test() -> None:
    # bench/precision.py measured each kind: bf16 faster with AMX or AVX-512 BF16, fp32 with AVX2 alone.
    assert pick_precision("auto", "cpu", cpu(amx=True, avx512_bf16=True, avx512=True)) == "bf16"  # Intel Xeon, AMX
    assert pick_precision("auto", "cpu", cpu(avx512_bf16=True, avx512=True)) == "bf16"  # AMD EPYC, Zen 4 and later
    assert pick_precision("auto", "cpu", cpu(avx512=True)) == "fp32"  # AVX-512 without BF16: emulated
    assert pick_precision("auto", "cpu", cpu()) == "fp32"  # AVX2 alone (AMD EPYC, Zen 3)
    assert pick_precision("auto", "cpu", cpu(avx2=False)) == "fp32"
    assert pick_precision("fp32", "cpu", cpu(amx=True)) == "fp32"  # asked for by name: kept
    assert pick_precision("auto", "cuda", cpu(amx=True)) == "fp16"


def test_this_machines_cpu_is_read_and_described() -> None:
    here = cpu_features()
    assert here.model and here.model in here.describe()
    assert all(name in here.describe() for name in ("AMX", "AVX-512 BF16", "AVX2"))
    assert pick_precision("auto", "cpu") == pick_precision("auto", "cpu", here)


def test_the_machine_is_decided_from_this_cpu_and_models_load_as_decided(tiny_yolo: Path, tiny_clip: Path) -> None:
    """fp32 on a CPU without bf16 instructions, bf16 on one with them: checked on whichever CPU runs this."""
    import os

    import torch
    from ultralytics.utils import NUM_THREADS

    threads_before = torch.get_num_threads()
    # A count ultralytics never sets (it sets NUM_THREADS as it builds a predictor), so holding it shows.
    torch.set_num_threads(NUM_THREADS + 1)
    try:
        here = cpu_features()
        machine = decide_machine("cpu")
        assert machine.precision == ("bf16" if here.computes_bf16 else "fp32") and machine.cpu == here.describe()
        assert machine.torch_threads == NUM_THREADS + 1
        assert (machine.decode_threads, machine.detect_batch_size) == (min(8, os.cpu_count() or 1), 1)
        assert decide_machine("cpu", "fp32").precision == "fp32"  # a precision asked for by name is kept
        # Loading takes the plan as it is: the embedder's weights are in its precision, the detector runs in it.
        embedder = load_embedder(str(tiny_clip), machine)
        wanted = torch.bfloat16 if machine.precision == "bf16" else torch.float32
        assert {weight.dtype for weight in embedder._model.parameters()} == {wanted}  # type: ignore[attr-defined]
        detector = load_detector(str(tiny_yolo), machine)
        assert detector.precision == machine.precision  # type: ignore[attr-defined]
        assert torch.get_num_threads() == machine.torch_threads  # building its predictor did not change them
        torch.set_num_threads(1)
        detector.detect(scenes(1), DetectionSettings())
        assert torch.get_num_threads() == machine.torch_threads  # and a detection sets them back to the plan's
    finally:
        torch.set_num_threads(threads_before)


def test_a_bad_precision_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match="precision"):
        IndexParams(precision="int4")  # type: ignore[arg-type]


def scenes(count: int = 6) -> list:
    return [make_scene(seed)[0] for seed in range(1_000_000, 1_000_000 + count)]


# The world's scenes drawn at 640 px, the default detector size: decoded in bf16, a coordinate near
# 600 px is a multiple of 4, so this is where reduced precision loses box accuracy first (at the
# scenes' own 256 px, boxes decoded in bf16 still stayed near IoU 0.9).
DETECTION_SIZE = 640


def detection_scenes(count: int = 12) -> list:
    return [scene.resize((DETECTION_SIZE, DETECTION_SIZE)) for scene in scenes(count)]


def iou(a: Detection, b: Detection) -> float:
    width = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    height = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    overlap = width * height
    area = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - overlap
    return overlap / area


# How far reduced precision may move a detection's confidence. The largest shift measured against
# fp32 on the world's detector was 0.037 in bf16 and 0.002 in fp16 (40 scenes, 320 matched boxes, an
# AMD EPYC with AVX2 alone, where PyTorch emulates bf16; bf16 keeps 8 significant bits, so the
# score's last logit moves by a few hundredths whatever the kernels). A box within this margin of
# the threshold may appear or vanish with the precision (an AMD EPYC with AVX-512 BF16 found one
# at 0.254 that fp32 put under 0.25); every box further from it must be found by both. Twice the
# measured shift, so that CPUs whose kernels add in another order pass too.
CONFIDENCE_MARGIN = 0.08
MIN_IOU = 0.9  # the smallest IoU of a confident box against fp32 was 0.961 in bf16 and 0.965 in fp16


def disagreements(
    exact: list[list[Detection]], reduced: list[list[Detection]], threshold: float, margin: float = CONFIDENCE_MARGIN
) -> list[str]:
    """Where reduced-precision detections differ from fp32's by more than precision explains.

    Every box at least `margin` above `threshold` in either list must be matched, one to one, by a
    box of the same class in the other at IoU >= MIN_IOU; boxes nearer the threshold may go unmatched.
    """
    found = []
    for picture, (boxes_a, boxes_b) in enumerate(zip(exact, reduced, strict=True)):
        pairs = sorted(
            (
                (iou(a, b), i, j)
                for i, a in enumerate(boxes_a)
                for j, b in enumerate(boxes_b)
                if a.class_id == b.class_id
            ),
            reverse=True,
        )
        matched_a: set[int] = set()
        matched_b: set[int] = set()
        for overlap, i, j in pairs:  # greedy, best overlap first: each box matches at most one
            if overlap >= MIN_IOU and i not in matched_a and j not in matched_b:
                matched_a.add(i)
                matched_b.add(j)
        for name, boxes, matched in (("fp32", boxes_a, matched_a), ("reduced", boxes_b, matched_b)):
            for index, box in enumerate(boxes):
                if index not in matched and box.confidence >= threshold + margin:
                    found.append(f"picture {picture}: {name}'s {box.class_name} at {box.confidence:.3f} has no match")
    return found


def confident(detections: list[list[Detection]], threshold: float) -> int:
    return sum(box.confidence >= threshold + CONFIDENCE_MARGIN for boxes in detections for box in boxes)


@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_precision_finds_the_confident_boxes_fp32_finds(precision: str) -> None:
    settings = DetectionSettings(image_size=DETECTION_SIZE, confidence=0.25)
    pictures = detection_scenes()
    exact = load_detector(str(WORLD_DETECTOR), decide_machine("cpu", "fp32")).detect(pictures, settings)
    reduced = load_detector(str(WORLD_DETECTOR), decide_machine("cpu", precision)).detect(pictures, settings)
    assert confident(exact, settings.confidence) >= 20, "the world detector should find objects in these scenes"
    assert disagreements(exact, reduced, settings.confidence) == []


def test_the_comparison_fails_when_reduced_precision_breaks_the_detector() -> None:
    """Shifted boxes, swapped classes or lost detections are caught; boxes near the threshold are not."""
    settings = DetectionSettings(image_size=DETECTION_SIZE, confidence=0.25)
    exact = load_detector(str(WORLD_DETECTOR), decide_machine("cpu", "fp32")).detect(detection_scenes(), settings)
    threshold = settings.confidence
    assert disagreements(exact, exact, threshold) == []

    def changed(change) -> list[list[Detection]]:
        return [[change(box) for box in boxes] for boxes in exact]

    shifted = changed(
        lambda box: replace(box, x1=box.x1 + 0.1 * (box.x2 - box.x1), x2=box.x2 + 0.1 * (box.x2 - box.x1))
    )
    assert disagreements(exact, shifted, threshold)  # IoU 0.82: the coordinates lost precision
    swapped = changed(lambda box: replace(box, class_id=box.class_id + 1))
    assert disagreements(exact, swapped, threshold)
    half_lost = [boxes[: len(boxes) // 2] for boxes in exact]
    assert disagreements(exact, half_lost, threshold)
    near_threshold_moved = [
        [replace(box, confidence=threshold + CONFIDENCE_MARGIN - 0.01) for box in boxes[:1]] + boxes[1:]
        for boxes in exact
    ]
    without_them = [boxes[1:] for boxes in exact]
    assert disagreements(near_threshold_moved, without_them, threshold) == []


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # rows are unit length


# The lowest cosine to fp32 measured was 0.99992 (bf16, CLIP ViT-B/32's text tower; AVX2 alone) and
# 0.9999995 in fp16: 0.999 leaves ten times that distance, while a vector that lost its direction
# (a wrong cast, a layer skipped) falls far below it.
@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_precision_embeddings_stay_within_cosine_0_999(precision: str, tmp_path_factory) -> None:
    pictures = scenes(4)
    texts = ["a photo of a red triangle", "a small blue circle beside a large green square"]
    for spec in (str(WORLD_EMBEDDER), str(build_clip_vit_b32(tmp_path_factory.getbasetemp() / "clip-vit-b32"))):
        exact = load_embedder(spec, decide_machine("cpu", "fp32"))
        reduced = load_embedder(spec, decide_machine("cpu", precision))
        assert cosines(exact.embed_images(pictures), reduced.embed_images(pictures)).min() >= 0.999, spec
        assert cosines(exact.embed_texts(texts), reduced.embed_texts(texts)).min() >= 0.999, spec


def test_precision_is_not_part_of_what_decides_reindexing() -> None:
    """bf16 and fp32 agree within tolerance: switching must not redo a whole collection."""
    from schemas.params import signature_of

    bf16, fp32 = IndexParams(precision="bf16"), IndexParams(precision="fp32")
    assert signature_of("d", bf16.detection) == signature_of("d", fp32.detection)


def test_the_benchmark_clip_is_the_released_architecture(tmp_path_factory) -> None:
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(build_clip_vit_b32(tmp_path_factory.getbasetemp() / "clip-vit-b32"))
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.vision_config.patch_size, config.vision_config.image_size, config.projection_dim) == (32, 224, 512)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (512, 12)
    assert Path(tmp_path_factory.getbasetemp() / "clip-vit-b32" / "model.safetensors").stat().st_size > 500e6
