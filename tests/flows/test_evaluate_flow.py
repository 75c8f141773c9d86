"""The evaluate flow's plumbing end to end with tiny random models (numbers meaningless, structure checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.evaluate import evaluate
from tests.flows.test_flows import latest_artifact

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_world_evaluation_indexes_each_setting_and_reports_every_mode_and_bucket(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    summary = evaluate(
        benchmark="world",
        world_scenes=10,
        detector=str(tiny_yolo),
        embedder=str(tiny_clip),
        confidence=0.0001,
        paddings=[0.0, 0.2],
        data_dir=tmp_path / "data",
        device="cpu",
    )
    assert set(summary.means) == {"padding 0, max_detections 20", "padding 0.2, max_detections 20"}
    first = summary.means["padding 0, max_detections 20"]
    assert set(first) == {
        "whole images", "crops", "whole + crops", "whole + crops, every hit",
        "whole + crops, text", "whole + crops, hybrid",
    }  # fmt: skip
    # Random weights rank at random, but not without rules: every one of the 10 scenes has a whole-image
    # vector, so a caption's one relevant scene is always within the top 10, and recall never falls with k.
    captions = first["whole images"]["caption"]["all"]
    assert captions["R@10"] == 1.0, captions
    assert 0.0 <= captions["R@1"] <= captions["R@5"] <= captions["R@10"], captions
    assert {"R@1", "R@5", "R@10", "R@50", "P@10", "AP"} <= set(first["crops"]["category"]["all"])
    report = Path(summary.report_path).read_text()
    for heading in ("### small objects", "### medium objects", "### large objects", "## Caption retrieval"):
        assert heading in report
    assert "## Index settings compared" in report and Path(summary.plot_path).stat().st_size > 0
    assert (
        json.loads((tmp_path / "data" / "eval" / "world-1000000-10-results.json").read_text())["benchmark"] == "world"
    )
    assert "data:image/jpeg;base64," in latest_artifact("eval-report").data  # the plot, inline
    assert summary.unknown_classes == [] and summary.region_sources == []  # the comparison only when asked


def test_embedders_are_compared_side_by_side_over_one_set_of_detections(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    from components.models.loading import model_id
    from components.store.writer import StoreWriter
    from schemas.params import WORLD_EMBEDDER

    embedders = [str(tiny_clip), str(WORLD_EMBEDDER)]
    summary = evaluate(
        benchmark="world", world_scenes=10, detector=str(tiny_yolo), embedders=embedders, confidence=0.0001,
        data_dir=tmp_path / "data", device="cpu",
    )  # fmt: skip
    setting = "padding 0, max_detections 20"
    assert set(summary.means) == {f"{setting}, embedder tiny-clip", f"{setting}, embedder clip"}
    # One index: the second embedder embedded the first one's stored crops (no second detection).
    [index] = (tmp_path / "data" / "eval").glob("world-*-padding0-max20/lancedb")
    held = {item.embedder: item.vectors for item in StoreWriter(str(index)).indexed_embedders()}
    assert set(held) == {model_id(spec) for spec in embedders} and len(set(held.values())) == 1
    report = Path(summary.report_path).read_text()
    assert f"{setting}, embedder tiny-clip" in report and f"{setting}, embedder clip" in report


def test_unknown_classes_get_a_fresh_index_per_region_source_and_no_crop_of_a_hidden_class(tmp_path: Path) -> None:
    from components.store.database import Database

    data = tmp_path / "data"
    summary = evaluate(
        benchmark="world", world_scenes=16, unknown_classes=["red triangle"], data_dir=data, device="cpu"
    )  # the world's trained models: the detector has the world's class names to hide one of
    assert summary.unknown_classes == ["red triangle"]
    whole, detector, tiles, proposals = summary.region_sources
    assert (whole.name, detector.name) == ("whole photos only", "whole photos + detector crops")
    assert tiles.name == "whole photos + detector crops + tiles 2,3"
    assert whole.photos == detector.photos == 16 and whole.index_seconds > 0 and detector.index_seconds > 0
    assert whole.crops == 0 and whole.vectors == 16  # the detector never ran: a vector per photo
    assert detector.crops > 0 and detector.vectors == 16 + detector.crops  # no world object nears the whole frame
    assert 0 < whole.disk_bytes < detector.disk_bytes < tiles.disk_bytes
    # The same detector crops, and 4 + 9 tiles of each photo (none nears the whole frame: a level-2 tile is a third).
    assert tiles.crops == detector.crops + 16 * 13 and tiles.vectors == 16 + tiles.crops
    # Proposals beside the detector's crops: none of them a box the detector had (stored once, as the detector's).
    assert proposals.name == "whole photos + detector crops + proposals 8"
    assert detector.crops < proposals.crops <= detector.crops + 16 * 8 and proposals.vectors == 16 + proposals.crops
    assert whole.covered["named"].keys() <= {"small", "medium", "large"}
    assert set(whole.covered["named"].values()) == {0.0}  # a whole photo covers no world object at IoU 0.5
    assert set(detector.queries) == {"named", "unnamed"} and detector.queries == whole.queries
    assert {"P@5", "R@5", "AP"} <= set(detector.means["named"]["medium"])
    # The hidden class has no crop in any index of the run (the region sources' and the usual ones).
    eval_folder = data / "eval"
    crop_tables = [Database(str(db)).class_names() for db in eval_folder.glob("**/lancedb")]
    assert len(crop_tables) == 5 and all("red triangle" not in names for names in crop_tables)
    assert any("red circle" in names for names in crop_tables)
    assert not (eval_folder / "world-1000000-16-regions-without-red-triangle" / "warm-up").exists()
    report = Path(summary.report_path).read_text()
    assert "## Classes the detector cannot name, per region source" in report
    assert report.index("## Classes the detector cannot name") < report.index("## Category retrieval")
    saved = json.loads((eval_folder / "world-1000000-16-results.json").read_text())
    assert [item["source"] for item in saved["region_sources"]] == ["whole", "detector", "tiles", "proposals"]


def test_an_unknown_class_the_detector_lacks_fails_before_anything_is_indexed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--unknown-classes: \['purple hexagon'\] are not classes of the detector"):
        evaluate(
            benchmark="world", world_scenes=10, unknown_classes=["purple hexagon"], data_dir=tmp_path, device="cpu"
        )
    assert not (tmp_path / "eval").exists()  # checked before the scenes were even written
