"""Parameter models of nested groups, seen flat: what code reads and what people and Prefect see agree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.flat import flat_location
from schemas.params import IndexParams, QueryParams
from schemas.settings import DetectionSettings


def test_flat_names_fold_into_their_groups_and_nested_groups_are_the_same_params() -> None:
    flat = IndexParams(confidence=0.4, chunk_size=8, s3_region="eu-west-1", limit=3)
    assert flat.detection.confidence == 0.4 and flat.batching.chunk_size == 8
    assert flat.object_store.s3_region == "eu-west-1" and flat.limit == 3
    nested = IndexParams(
        detection={"confidence": 0.4}, batching={"chunk_size": 8}, object_store={"s3_region": "eu-west-1"}, limit=3
    )
    assert nested == flat
    # A flat name beside its group's model: the flat value wins, the group's others stay.
    assert IndexParams(detection=DetectionSettings(padding=0.2), confidence=0.5).detection == DetectionSettings(
        padding=0.2, confidence=0.5
    )


def test_flat_gives_every_form_field_once_and_builds_the_same_params_again() -> None:
    params = IndexParams(source="/photos", max_detections=3, task_runner="ray", workers=2)
    flat = params.flat()
    assert list(flat) == list(IndexParams.flat_fields())
    assert "detection" not in flat and flat["max_detections"] == 3 and flat["workers"] == 2
    assert IndexParams(**flat) == params
    assert QueryParams(**QueryParams(k=3, kinds="crop").flat()).search.k == 3


def test_a_copy_changes_flat_fields_only_through_validation() -> None:
    params = IndexParams()
    with pytest.raises(ValueError, match=r"\['chunk_size'\] are not fields of IndexParams"):
        params.model_copy(update={"chunk_size": 5})  # pydantic would set it beside the group, unseen
    assert params.with_flat(chunk_size=5).batching.chunk_size == 5
    with pytest.raises(ValidationError):
        params.with_flat(chunk_size=0)


def test_errors_inside_a_group_are_named_by_the_flat_field() -> None:
    with pytest.raises(ValidationError) as raised:
        IndexParams(workers=2)  # the thread runner takes one worker: a check of the runner group
    (error,) = raised.value.errors()
    assert error["loc"] == ("runner",) and flat_location(error["loc"], IndexParams) == ()
    assert "workers: the thread runner" in error["msg"]
