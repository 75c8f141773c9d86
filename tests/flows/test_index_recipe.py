"""An index remembers how it was made: a re-run that names no detector or setting makes it the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.errors import StoreCorruptError
from components.ops import trust
from components.ops.access import AccessDenied
from components.store.database import Database
from components.store.writer import StoreWriter
from flows import deployed
from flows.cli import main
from flows.index_coco import index_coco
from schemas.params import IndexParams, IndexRecipe
from schemas.settings import DetectionSettings
from schemas.stack import StackParams
from tests.flows.test_embedders import MEAN
from tests.flows.test_tiles import DETECTOR, crops_by_source

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_a_rerun_naming_nothing_keeps_the_detector_and_settings_and_one_naming_another_says_what_changes(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path
) -> None:
    data = tmp_path / "data"
    where = ["--source", str(photo_folder), "--data-dir", str(data), "--device", "cpu"]
    made = ["--detector", DETECTOR, "--embedder", MEAN, "--proposals", "0", "--tiles", "2", "--min-box-pixels", "4"]
    first = CliRunner().invoke(main, ["index", *where, *made])
    assert first.exit_code == 0, first.output
    recipe = Database(str(data / "lancedb")).index_recipe()
    assert recipe is not None and recipe.detector == DETECTOR and recipe.detection.tiles == [2]
    tiles = crops_by_source(str(data / "lancedb"))["tile"]

    # Named nothing: the colour detector, its settings and the tiles again, so no new work (before, the
    # detector fell back to yolov10x.pt, which cannot even be downloaded here).
    again = CliRunner().invoke(main, ["index", *where])
    assert again.exit_code == 0, again.output
    assert "no new work" in again.output and "changes from how the index was made" not in again.output
    assert crops_by_source(str(data / "lancedb"))["tile"] == tiles

    # The flow (Python, deployments) naming no detector takes the index's too, with the settings it is given.
    report = index_coco(source=str(photo_folder), data_dir=data, device="cpu", proposals=0, tiles=[2], min_box_pixels=4)
    assert report.images_new == 0 and report.model_batches == 0

    # Another detector and no tiles: the line names both changes, and the run re-detects.
    other = ["--detector", str(tiny_yolo), "--tiles", "", "--confidence", "0.0001"]
    changed = CliRunner().invoke(main, ["index", *where, *other])
    assert changed.exit_code == 0, changed.output
    line = next(text for text in changed.output.splitlines() if text.startswith("changes from how the index was made"))
    assert (
        f"detector {DETECTOR} -> {tiny_yolo}" in line
        and "tiles 2 -> none" in line
        and "confidence 0.25 -> 0.0001" in line
    )
    assert "tile" not in crops_by_source(str(data / "lancedb"))
    assert Database(str(data / "lancedb")).index_recipe().detector == str(tiny_yolo)  # type: ignore[union-attr]


def test_a_recorded_detector_is_held_to_the_policy_like_a_parameter(tmp_path: Path) -> None:
    for folder in ("photos", "data", "models"):
        (tmp_path / folder).mkdir()
    policy = StackParams(project_dir=tmp_path).operator_policy()
    params = IndexParams(source=str(tmp_path / "photos"), data_dir=tmp_path / "data")
    planted = IndexRecipe(detector="plugin:os:system", detection=DetectionSettings())
    with pytest.raises(AccessDenied, match="detector recorded in the index 'plugin:os:system': plug-ins run code"):
        deployed.hold_recorded_detector(params, planted, policy)
    words = IndexRecipe(detector="yolov10x.pt", vocabulary="/etc/passwd", detection=DetectionSettings())
    with pytest.raises(AccessDenied, match="vocabulary recorded in the index '/etc/passwd' is outside"):
        deployed.hold_recorded_detector(params, words, policy)
    deployed.hold_recorded_detector(params.with_flat(detector="yolov10x.pt"), planted, policy)  # named: not taken
    trust.check_index_run(params, policy, {})  # naming no detector is allowed: the index's or the default is held


def test_a_recipe_this_version_cannot_read_is_one_error_naming_the_index(tmp_path: Path) -> None:
    db = str(tmp_path / "lancedb")
    writer = StoreWriter(db)
    writer.record_recipe(IndexRecipe(detector="yolov10x.pt", detection=DetectionSettings(tiles=[3])))
    assert Database(db).index_recipe() == IndexRecipe(detector="yolov10x.pt", detection=DetectionSettings(tiles=[3]))
    broken = json.dumps({"detector": "yolov10x.pt", "detection": {"tiles": [1]}})
    writer._upsert(writer._open("index_settings"), "key", _setting_row(writer, broken))
    with pytest.raises(StoreCorruptError, match=f"the index at {db} records how it was made in a form"):
        Database(db).index_recipe()


def _setting_row(writer: StoreWriter, value: str):
    import pyarrow as pa

    table = writer._open("index_settings")
    return pa.Table.from_pylist([{"key": "recipe", "value": value}], schema=table.schema)
