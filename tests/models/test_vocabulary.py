"""An open-vocabulary detector (YOLOE, built from its YAML with random weights) given a saved vocabulary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from components.errors import ModelUnavailableError
from components.models.detector import YoloDetector, load_detector
from components.models.devices import decide_machine
from components.models.loading import detector_id_of
from components.models.vocabulary import (
    compute_prompt_embeddings,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from components.regions.detector import DetectorRegions
from flows.cli import main
from schemas.settings import DetectionSettings
from tests.conftest import ultralytics_assets

YOLOE = "yoloe-11s-seg.yaml"  # ultralytics builds it offline (random weights); real runs name yoloe-11s-seg.pt
WORDS = ["guitar", "key", "logo"]
# Random weights score every box near zero: a zero threshold keeps boxes to check.
ANY_BOX = DetectionSettings(confidence=0.0, max_detections=5)


def vocabulary_file(path: Path, words: list[str] = WORDS, dimension: int = 512, seed: int = 0) -> Path:
    """What `cropsearch vocabulary` saves, with random unit vectors in place of MobileCLIP's (not downloadable
    here; its embeddings are unit vectors too, and far longer random ones drive every score to exactly 0)."""
    vectors = np.random.default_rng(seed).standard_normal((len(words), dimension))
    return save_prompt_embeddings(path, words, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def test_a_vocabulary_reads_back_as_saved_and_a_bad_one_names_its_file(tmp_path: Path) -> None:
    saved = vocabulary_file(tmp_path / "words.npz")
    loaded = load_prompt_embeddings(saved)
    assert loaded.names == WORDS and loaded.vectors.shape == (3, 512) and loaded.vectors.dtype == np.float32

    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    np.savez(tmp_path / "other.npz", names=np.array(["a"]))
    np.savez(tmp_path / "ragged.npz", names=np.array(["a", "b"]), embeddings=np.zeros((3, 4), np.float32))
    for name, why in [
        ("junk.npz", "not a vocabulary file"),
        ("other.npz", "not a vocabulary file"),
        ("ragged.npz", "2 words but 3 embeddings"),
        ("missing.npz", "no such file"),
    ]:
        with pytest.raises(ValueError, match=f"vocabulary '.*{name}': {why}"):
            load_prompt_embeddings(tmp_path / name)
    with pytest.raises(ValueError, match="words given twice: key"):
        vocabulary_file(tmp_path / "twice.npz", ["key", "key"])
    with pytest.raises(ValueError, match=r"ends in \.npz"):
        vocabulary_file(tmp_path / "words.pt")


def test_yoloe_finds_only_the_vocabularys_words_and_its_boxes_are_open_vocabulary_regions(
    tmp_path: Path, tiny_yoloe: Path
) -> None:
    words = vocabulary_file(tmp_path / "words.npz")
    detector = load_detector(str(tiny_yoloe), decide_machine("cpu", "fp32"), vocabulary=str(words))
    assert isinstance(detector, YoloDetector) and detector.open_vocabulary
    assert detector.class_names == dict(enumerate(WORDS))

    photos = [Image.open(path).convert("RGB") for path in ultralytics_assets()]
    detector_id = detector_id_of(str(tiny_yoloe), str(words))
    assert detector_id.startswith("tiny-yoloe.pt@") and "+words.npz@" in detector_id
    found = DetectorRegions(detector, detector_id, ANY_BOX).regions(photos)
    assert all(0 < len(regions) <= 5 for regions in found)
    for region in (region for regions in found for region in regions):
        assert region.source == "open-vocabulary" and region.class_name in WORDS and region.proposer == detector_id

    wanted = found[0][-1].class_name
    keep = DetectionSettings(confidence=0.0, max_detections=50, classes=[wanted])  # --classes keeps some words
    assert {box.class_name for box in detector.detect(photos, keep)[0]} == {wanted}


def test_a_detector_of_fixed_classes_is_the_detector_source(tiny_yolo: Path) -> None:
    detector = load_detector(str(tiny_yolo), decide_machine("cpu", "fp32"))
    assert not detector.open_vocabulary  # type: ignore[attr-defined]
    (regions,) = DetectorRegions(detector, "tiny", ANY_BOX).regions([Image.open(ultralytics_assets()[0])])
    assert regions and {region.source for region in regions} == {"detector"}


def test_each_vocabulary_is_its_own_detector_and_id(tmp_path: Path) -> None:
    first, second = vocabulary_file(tmp_path / "a.npz"), vocabulary_file(tmp_path / "b.npz", ["ring", "mug"], seed=1)
    one = load_detector(YOLOE, decide_machine("cpu", "fp32"), vocabulary=str(first))
    assert load_detector(YOLOE, decide_machine("cpu", "fp32"), vocabulary=str(first)) is one  # loaded once per process
    other = load_detector(YOLOE, decide_machine("cpu", "fp32"), vocabulary=str(second))
    assert other is not one and other.class_names == {0: "ring", 1: "mug"}  # type: ignore[attr-defined]
    assert len({detector_id_of(YOLOE), detector_id_of(YOLOE, str(first)), detector_id_of(YOLOE, str(second))}) == 3

    before = detector_id_of(YOLOE, str(first))
    vocabulary_file(first, ["guitar", "key", "ring"])  # other words in the same file: other boxes, another id
    assert detector_id_of(YOLOE, str(first)) != before


def test_a_vocabulary_that_does_not_fit_its_detector_is_refused_naming_both(tmp_path: Path) -> None:
    words = vocabulary_file(tmp_path / "words.npz")
    with pytest.raises(ValueError, match=r"vocabulary: detector 'yolo11n\.yaml' takes no words"):
        load_detector("yolo11n.yaml", decide_machine("cpu", "fp32"), vocabulary=str(words))
    narrow = vocabulary_file(tmp_path / "narrow.npz", dimension=256)
    with pytest.raises(ValueError, match=f"256 dimensions and detector '{YOLOE}' takes 512"):
        load_detector(YOLOE, decide_machine("cpu", "fp32"), vocabulary=str(narrow))
    with pytest.raises(ValueError, match="is a plug-in"):
        load_detector("plugin:tests.plugins:colour_blob_detector", decide_machine("cpu", "fp32"), vocabulary=str(words))


def test_computing_a_vocabulary_asks_for_what_it_needs_instead_of_installing_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a YOLOE model that takes words"):
        compute_prompt_embeddings("yolo11n.yaml", ["guitar"])
    # The project's environment has no `clip` package (ultralytics would pip-install it from git, unasked):
    # the command says what to install, in one line, and writes nothing.
    assert importlib.util.find_spec("clip") is None, "cropsearch does not depend on ultralytics' CLIP tokenizer"
    command = ["vocabulary", "guitar, key", "--detector", YOLOE, "--out", str(tmp_path / "w.npz")]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "pip install git+https://github.com/ultralytics/CLIP.git" in result.output
    assert not (tmp_path / "w.npz").exists()
    with pytest.raises(ModelUnavailableError):
        compute_prompt_embeddings(YOLOE, ["guitar"])
