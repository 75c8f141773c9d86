"""The YOLO detector through the same loading path as real weights (a tiny random-weight .pt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from components.models.detector import class_ids_for, load_detector
from components.models.devices import decide_machine
from schemas.settings import DetectionSettings
from tests.conftest import ultralytics_assets


def test_yolo_detects_a_batch_and_respects_max_detections(tiny_yolo: Path) -> None:
    detector = load_detector(str(tiny_yolo), decide_machine("cpu", "fp32"))
    photos = [Image.open(path).convert("RGB") for path in ultralytics_assets()]
    # Random weights find nothing at normal thresholds; a near-zero threshold yields boxes to check.
    results = detector.detect(photos, DetectionSettings(confidence=0.0001, max_detections=3))
    assert len(results) == len(photos)
    for photo, found in zip(photos, results, strict=True):
        assert 0 < len(found) <= 3
        for box in found:
            assert 0 <= box.confidence <= 1
            assert box.class_name == detector.class_names[box.class_id]
            assert -1 <= box.x1 < box.x2 <= photo.width + 1 and -1 <= box.y1 < box.y2 <= photo.height + 1


def test_detector_is_loaded_once_per_process(tiny_yolo: Path) -> None:
    machine = decide_machine("cpu", "fp32")
    assert load_detector(str(tiny_yolo), machine) is load_detector(str(tiny_yolo), machine)


def test_class_filter_keeps_only_named_classes(tiny_yolo: Path) -> None:
    detector = load_detector(str(tiny_yolo), decide_machine("cpu", "fp32"))
    photo = Image.open(ultralytics_assets()[0]).convert("RGB")
    (unfiltered,) = detector.detect([photo], DetectionSettings(confidence=0.0001, max_detections=50))
    wanted = unfiltered[-1].class_name
    (found,) = detector.detect([photo], DetectionSettings(confidence=0.0001, classes=[wanted]))
    assert found and {box.class_name for box in found} == {wanted}


def test_unknown_class_names_fail_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown classes \['plant'\]; this detector knows: cat, dog"):
        class_ids_for(["cat", "plant"], {0: "cat", 1: "dog"})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_building_the_predictor_leaves_torchs_thread_count_as_it_was(tiny_yolo: Path, precision: str) -> None:
    import torch
    from ultralytics.utils import NUM_THREADS

    from components.models.detector import YoloDetector

    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1  # ultralytics would set NUM_THREADS for the whole process
    torch.set_num_threads(wanted)
    try:
        detector = YoloDetector(str(tiny_yolo), decide_machine("cpu", precision))  # type: ignore[arg-type]
        detector.detect([Image.open(ultralytics_assets()[0]).convert("RGB")], DetectionSettings())
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
