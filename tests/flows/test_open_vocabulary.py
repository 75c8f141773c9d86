"""An open-vocabulary detector end to end: `cropsearch index --detector <yoloe> --vocabulary words.npz`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import QueryParams
from tests.conftest import ultralytics_assets
from tests.flows.test_embedders import MEAN
from tests.flows.test_tiles import crops_by_source
from tests.models.test_vocabulary import WORDS, vocabulary_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_a_vocabularys_words_are_the_crops_classes_and_changing_it_detects_again(
    tmp_path: Path, tiny_yoloe: Path
) -> None:
    photos, data = tmp_path / "photos", tmp_path / "data"
    photos.mkdir()
    for asset in ultralytics_assets():  # real photos: the random YOLOE finds boxes in them (tests/tiny_models.py)
        shutil.copy(asset, photos)
    words = vocabulary_file(tmp_path / "models" / "words.npz")
    db = str(data / "lancedb")
    index = {
        "source": str(photos),
        "data_dir": data,
        "detector": str(tiny_yoloe),
        "vocabulary": str(words),
        "embedder": MEAN,
        "device": "cpu",
        "precision": "fp32",
        "confidence": 0.0,
        "max_detections": 3,
        "proposals": 0,
    }
    first = index_coco(**index)
    found = crops_by_source(db)
    assert first.images_new == 2 and set(found) == {"open-vocabulary"} and len(found["open-vocabulary"]) > 0
    hits = query(text="red", **QueryParams(data_dir=data, k=20, kinds="crop", mode="vector", render=False).flat())
    assert hits.hits and all(hit.crop is not None and hit.crop.class_name in WORDS for hit in hits.hits)
    assert all(hit.crop.source == "open-vocabulary" and "+words.npz@" in hit.crop.detector for hit in hits.hits)  # type: ignore[union-attr]
    faceted = QueryParams(data_dir=data, k=20, region_sources=["open-vocabulary"], mode="vector", render=False)
    assert len(query(text="red", **faceted.flat()).hits) == 2  # each photo once, by its best region

    again = index_coco(**index)
    assert again.images_new == 0 and again.model_batches == 0

    # Proposals added: the photos are re-cut, and the open-vocabulary boxes stay as they are (no detection).
    recut = index_coco(**{**index, "proposals": 8})
    assert recut.images_recut == 2
    assert crops_by_source(db)["open-vocabulary"] == found["open-vocabulary"]

    # Other words in the same file: other classes, so every photo is detected again.
    vocabulary_file(words, ["ring", "mug"])
    changed = index_coco(**{**index, "proposals": 8})
    assert changed.images_new == 2 and changed.images_recut == 0
    hits = query(text="red", **QueryParams(data_dir=data, k=20, kinds="crop", mode="vector", render=False).flat())
    named = {hit.crop.class_name for hit in hits.hits if hit.crop is not None and hit.crop.source == "open-vocabulary"}
    assert named and named <= {"ring", "mug"}


def test_a_missing_or_broken_vocabulary_is_refused_before_any_work(tmp_path: Path, tiny_yoloe: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ultralytics_assets()[0], photos)
    flags = ["--source", str(photos), "--data-dir", str(tmp_path / "data"), "--detector", str(tiny_yoloe)]
    missing = CliRunner().invoke(main, ["index", *flags, "--vocabulary", str(tmp_path / "words.npz")])
    assert missing.exit_code == 2
    assert "words.npz': no such file; save one with `cropsearch vocabulary`" in missing.output
    (tmp_path / "broken.npz").write_bytes(b"x")
    broken = CliRunner().invoke(main, ["index", *flags, "--vocabulary", str(tmp_path / "broken.npz")])
    assert broken.exit_code == 2 and "broken.npz': not a vocabulary file" in broken.output
    assert not (tmp_path / "data" / "lancedb").exists()
