"""Retrieval metrics and ground truth on small hand-made cases whose answers were worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.evaluation.ground_truth import (
    Instance,
    coco_instances,
    coco_queries,
    sized_queries,
    world_instances,
    world_queries,
)
from components.evaluation.metrics import (
    EvalQuery,
    SearchMode,
    average_precision,
    evaluate_rankings,
    precision_at,
    recall_at,
    score_query,
)
from components.evaluation.synthetic import Scene, WorldObject


def test_recall_precision_and_average_precision_by_hand() -> None:
    ranked, relevant = ["a", "x", "b", "y", "c"], {"a", "b", "c", "d"}
    assert recall_at(ranked, relevant, 1) == 0.25
    assert recall_at(ranked, relevant, 5) == 0.75
    assert precision_at(ranked, relevant, 10) == 0.3  # 3 relevant among 10 slots, 5 of them empty
    assert average_precision(ranked, relevant) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 4)  # d never found: 0


def test_a_parent_listed_twice_is_found_once_but_seen_twice() -> None:
    ranked, relevant = ["a", "a", "b"], {"a", "b"}
    assert recall_at(ranked, relevant, 2) == 0.5
    assert precision_at(ranked, relevant, 10) == 0.3
    assert average_precision(ranked, relevant) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_size_buckets_score_their_own_images_with_the_others_taken_out() -> None:
    scores = score_query(["b", "x", "a", "c"], {"a": "small", "b": "large", "c": "small"}, ks=(1, 2, 3), curve_ks=())
    # small: b is taken out -> [x, a, c]
    assert (scores["small"]["R@1"], scores["small"]["R@2"], scores["small"]["R@3"]) == (0.0, 0.5, 1.0)
    assert scores["small"]["AP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # large: a and c are taken out -> [b, x]
    assert scores["large"]["R@1"] == 1.0 and scores["large"]["AP"] == 1.0
    assert scores["all"]["AP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    assert "medium" not in scores  # no relevant image of that size: no score, not a zero


def test_evaluate_rankings_averages_over_queries_per_mode_group_and_bucket() -> None:
    queries = [
        EvalQuery("cat", {"a": "small", "b": "large"}),
        EvalQuery("dog", {"c": "small"}),
        EvalQuery("a caption", {"a": "all"}, group="caption"),
        EvalQuery("nothing", {}),  # a category with no image in the index is skipped
    ]
    rankings = {
        ("whole", 0): ["b", "x", "a"],
        ("whole", 1): ["x", "y", "c"],
        ("whole", 2): ["a"],
        ("crops", 0): ["a", "b"],
        ("crops", 1): ["c"],
        ("crops", 2): ["x", "a"],
    }
    modes = [SearchMode("whole", "image"), SearchMode("crops", "crop")]
    result = evaluate_rankings("test", queries, lambda i, mode: rankings[(mode.name, i)], modes, ks=(1,), curve_ks=())
    # small bucket, R@1: whole -> cat [x, a] 0, dog [x, y, c] 0; crops -> cat [a] 1, dog [c] 1
    assert result.mean("whole", "category", "small", "R@1") == 0.0
    assert result.mean("crops", "category", "small", "R@1") == 1.0
    assert result.mean("whole", "category", "large", "R@1") == 1.0
    assert result.scores["whole"]["category"]["small"].queries == 2
    assert result.mean("crops", "caption", "all", "R@1") == 0.0 and result.mean("whole", "caption", "all", "R@1") == 1


def test_coco_annotations_become_category_and_caption_queries(tmp_path: Path) -> None:
    instances = {
        "images": [
            {"id": 1, "file_name": "f1.jpg"},
            {"id": 2, "file_name": "f2.jpg"},
            {"id": 3, "file_name": "f3.jpg"},
        ],
        "categories": [{"id": 2, "name": "potted plant"}, {"id": 1, "name": "cat"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "area": 500.0, "iscrowd": 0},
            {"image_id": 1, "category_id": 1, "area": 5000.0, "iscrowd": 0},
            {"image_id": 2, "category_id": 1, "area": 100.0, "iscrowd": 0},
            {"image_id": 2, "category_id": 2, "area": 90000.0, "iscrowd": 1},  # crowd regions are not objects
            {"image_id": 1, "category_id": 2, "area": 20000.0, "iscrowd": 0},
            {"image_id": 3, "category_id": 2, "area": 50.0, "iscrowd": 0},  # f3 is not indexed
        ],
    }
    captions = {
        "annotations": [
            {"id": 7, "image_id": 1, "caption": "A cat beside a plant. "},
            {"id": 8, "image_id": 1, "caption": "Another caption."},
            {"id": 9, "image_id": 2, "caption": "A small cat."},
            {"id": 10, "image_id": 3, "caption": "Not indexed."},
        ]
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    queries = coco_queries(tmp_path / "instances.json", tmp_path / "captions.json", {"f1.jpg", "f2.jpg"})
    assert queries == [
        EvalQuery("a photo of a cat", {"f1.jpg": "medium", "f2.jpg": "small"}),  # f1's largest cat is medium
        EvalQuery("a photo of a potted plant", {"f1.jpg": "large"}),
        EvalQuery("A cat beside a plant.", {"f1.jpg": "all"}, group="caption"),
        EvalQuery("A small cat.", {"f2.jpg": "all"}, group="caption"),
    ]


def test_world_scenes_become_queries_like_coco() -> None:
    scenes = [
        Scene("s1.jpg", (WorldObject("red circle", 0, 0, 10, 10), WorldObject("red circle", 0, 0, 50, 50)), "c1"),
        Scene("s2.jpg", (WorldObject("blue square", 0, 0, 100, 100),), "c2"),
    ]
    queries = world_queries(scenes, ["red circle", "blue square", "green triangle"])
    assert queries[0] == EvalQuery("a photo of a red circle", {"s1.jpg": "medium"})
    assert queries[1] == EvalQuery("a photo of a blue square", {"s2.jpg": "large"})
    assert queries[2].relevant == {}
    assert queries[3:] == [EvalQuery("c1", {"s1.jpg": "all"}, "caption"), EvalQuery("c2", {"s2.jpg": "all"}, "caption")]


def test_sized_queries_ask_for_each_class_at_each_size_it_comes_in_named_apart_from_unnamed() -> None:
    scenes = [
        Scene("s1.jpg", (WorldObject("red circle", 0, 0, 10, 10), WorldObject("blue square", 0, 0, 100, 100)), "c1"),
        Scene("s2.jpg", (WorldObject("red circle", 0, 0, 10, 10), WorldObject("red circle", 0, 0, 50, 50)), "c2"),
    ]
    instances = world_instances(scenes)
    assert instances[0] == Instance("s1.jpg", "red circle", (0, 0, 10, 10), 100)
    queries = sized_queries(instances, named={"blue square"})
    # Relevance is bucketed as for category queries (a photo's largest object of the class): s2 holds a
    # small red circle too, but its largest is medium, so "a small red circle" leaves s2 out of its ranking.
    circles = {"s1.jpg": "small", "s2.jpg": "medium"}
    assert queries == [
        EvalQuery("a large blue square", {"s1.jpg": "large"}, group="named", bucket="large"),
        EvalQuery("a small red circle", circles, group="unnamed", bucket="small"),
        EvalQuery("a medium-sized red circle", circles, group="unnamed", bucket="medium"),
    ]


def test_a_sized_query_is_scored_in_its_own_size_alone() -> None:
    query = EvalQuery("a small cat", {"a": "small", "b": "large"}, group="unnamed", bucket="small")
    result = evaluate_rankings("t", [query], lambda i, mode: ["b", "x", "a"], [SearchMode("m", "both")], (5,), ())
    assert set(result.scores["m"]["unnamed"]) == {"small"}  # neither "all" nor "large"
    assert result.mean("m", "unnamed", "small", "P@5") == pytest.approx(1 / 5)  # b is out of the ranking: [x, a]
    assert result.mean("m", "unnamed", "small", "AP") == pytest.approx(1 / 2)


def test_coco_instances_keep_their_boxes_and_leave_crowds_and_unindexed_photos_out(tmp_path: Path) -> None:
    instances = {
        "images": [{"id": 1, "file_name": "f1.jpg"}, {"id": 2, "file_name": "f2.jpg"}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "area": 500, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"image_id": 1, "category_id": 1, "area": 9000, "bbox": [0, 0, 300, 300], "iscrowd": 1},
            {"image_id": 2, "category_id": 1, "area": 50, "bbox": [0, 0, 5, 10], "iscrowd": 0},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    assert coco_instances(tmp_path / "instances.json", {"f1.jpg"}) == [
        Instance("f1.jpg", "cat", (10.0, 20.0, 40.0, 60.0), 500.0)  # COCO's bbox is x, y, width, height
    ]
