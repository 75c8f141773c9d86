"""The region-source comparison's pieces, on hand-made cases: sources, hidden classes, coverage, the report."""

from __future__ import annotations

import pytest

from components.evaluation.ground_truth import Instance
from components.evaluation.regions import (
    REGION_SOURCES,
    classes_kept,
    hidden_tag,
    region_coverage,
    region_sources,
)
from components.evaluation.report import region_section
from components.regions.region import box_iou
from schemas.params import REGION_SOURCE_NAMES, EvalParams, IndexParams
from schemas.results import RegionSourceReport


def test_every_region_source_the_parameters_offer_has_index_settings_that_index_params_accept() -> None:
    assert tuple(source.key for source in REGION_SOURCES) == REGION_SOURCE_NAMES
    assert EvalParams().region_sources == list(REGION_SOURCE_NAMES)
    for source in REGION_SOURCES:
        IndexParams(**source.index)  # a typo in a source's settings fails here, not mid-evaluation
    assert IndexParams(**region_sources(["whole"])[0].index).detection.max_detections == 0  # the detector never runs
    assert IndexParams(**region_sources(["tiles"])[0].index).detection.tiles == [2, 3]
    assert IndexParams(**region_sources(["proposals"])[0].index).detection.proposals == 8  # the default
    assert IndexParams(**region_sources(["detector"])[0].index).detection.proposals == 0
    with pytest.raises(ValueError, match="grid"):
        region_sources(["grid"])


def test_hidden_classes_must_be_the_detectors_own_and_leave_it_some() -> None:
    names = ["red circle", "red square", "blue square"]
    assert classes_kept(names, ["red square"]) == ["red circle", "blue square"]  # the detector's order
    with pytest.raises(ValueError, match=r"--unknown-classes: \['purple'\] are not classes of the detector"):
        classes_kept(names, ["purple"])
    with pytest.raises(ValueError, match="every class"):  # an empty keep-list would keep every class
        classes_kept(names, names)


def test_hidden_classes_name_their_folders() -> None:
    assert hidden_tag(["red triangle", "Green Circle"]) == "red-triangle+green-circle"
    many = [f"class number {i}" for i in range(10)]
    assert hidden_tag(many).startswith("10-classes-") and hidden_tag(many) != hidden_tag(many[:9])


def test_an_object_is_covered_by_a_region_overlapping_it_at_iou_one_half_in_its_own_size() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 20)) == 0.5
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    whole = (0.0, 0.0, 256.0, 256.0)
    regions = {"a.jpg": [whole, (0, 0, 10, 10)], "b.jpg": [whole]}
    instances = [
        Instance("a.jpg", "cat", (0, 0, 10, 11), 110),  # small, covered by the crop
        Instance("a.jpg", "cat", (100, 100, 200, 200), 10_000),  # large, no region near it
        Instance("b.jpg", "dog", (0, 0, 10, 10), 100),  # small, only the whole photo
        Instance("c.jpg", "dog", (0, 0, 10, 10), 100),  # its photo is not in the index: not counted
        Instance("b.jpg", "dog", (0, 0, 250, 250), 62_500),  # the whole photo covers it
    ]
    assert region_coverage(regions, instances, named={"cat"}) == {
        "named": {"small": 1.0, "large": 0.0},
        "unnamed": {"small": 0.0, "large": 1.0},
    }


def _report(source: str, name: str, small_p5: dict[str, float]) -> RegionSourceReport:
    return RegionSourceReport(
        source=source,
        name=name,
        photos=200,
        index_seconds=10.0,
        crops=400 if source == "detector" else 0,
        vectors=600 if source == "detector" else 200,
        disk_bytes=3_000_000,
        means={group: {"small": {"P@5": value, "R@5": 0.1, "AP": 0.2}} for group, value in small_p5.items()},
        queries={"named": {"small": 11}, "unnamed": {"small": 1}},
        covered={"named": {"small": 0.75}},
    )


def test_the_report_sets_named_beside_unnamed_per_size_and_costs_per_thousand_photos() -> None:
    reports = [
        _report("whole", "whole photos only", {"named": 0.15, "unnamed": 0.15}),
        _report("detector", "whole photos + detector crops", {"named": 0.9, "unnamed": 0.1}),
    ]
    text = region_section(reports, ["red triangle"])
    assert "unknown to the detector: red triangle" in text
    assert "named: 11 small, 0 medium, 0 large; unnamed: 1 small, 0 medium, 0 large" in text
    header = "| objects | region source | P@5 named | P@5 unnamed | R@5 named | R@5 unnamed | mAP named | mAP unnamed |"
    assert header in text
    assert (
        "| small | whole photos + detector crops | 0.900 | 0.100 | 0.100 | 0.100 | 0.200 | 0.200 | 0.750 | - |" in text
    )
    assert "| medium | whole photos only | - | - | - | - | - | - | - | - |" in text  # nothing measured: a dash
    # 200 photos: 10 s, 400 crops, 600 vectors, 3 MB -> per 1,000 photos 50 s, 2000, 3000, 15.0 MB
    assert "| whole photos + detector crops | 50 | 2000 | 3000 | 15.0 |" in text
    assert "| whole photos only | 50 | 0 | 1000 | 15.0 |" in text
