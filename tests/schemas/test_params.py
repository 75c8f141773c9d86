"""Bad parameters fail at construction, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.flat import flat_location
from schemas.params import (
    COCO_VAL2017_URL,
    IndexParams,
    QueryInput,
    QueryParams,
    detector_signature_of,
    legacy_signature_of,
    signature_of,
)
from schemas.settings import DetectionSettings


@pytest.mark.parametrize(
    ("model", "fields", "culprit"),
    [
        (QueryParams, {"k": 0}, "k"),
        (QueryParams, {"kinds": "crops"}, "kinds"),
        (QueryParams, {"min_confidence": 1.5}, "min_confidence"),
        (IndexParams, {"limit": 0}, "limit"),
        (IndexParams, {"device": "gpu"}, "device"),
        (IndexParams, {"checksum": "md5:xyz"}, "checksum"),
        (IndexParams, {"detector": "  "}, "detector"),
        (IndexParams, {"confidence": -0.1}, "confidence"),
        (IndexParams, {"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_values_name_their_field(model: type, fields: dict, culprit: str) -> None:
    with pytest.raises(ValidationError) as raised:
        model(**fields)
    # Grouped fields fail inside their group; the CLI and the UI name them by their flat name.
    assert flat_location(raised.value.errors()[0]["loc"], model) == (culprit,)


@pytest.mark.parametrize(
    ("text", "image", "message"),
    [
        ("", None, "text must not be empty"),
        ("   ", None, "text must not be empty"),
        ("x" * 10_000, None, "the limit is 1000"),
        ("a plant", "photo.jpg", "exactly one of text or image"),
        (None, None, "exactly one of text or image"),
    ],
)
def test_query_input_needs_exactly_one_usable_query(text: str | None, image: str | None, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QueryInput(text=text, image=image)


def test_defaults_point_at_coco_and_the_published_models() -> None:
    params = IndexParams()
    assert params.source == COCO_VAL2017_URL
    assert params.resolved_checksum == "md5:442b8da7639aecaf257c1dceb8ba8c80"
    assert params.resolved_source_name == "coco-val2017"
    # None: the index's detector and embedders; yolov10x and CLIP B/32 for a new index
    assert params.detector is None and params.resolved_detector == "yolov10x.pt" and params.embedder is None
    assert params.resolved_db_uri == "data/lancedb"


def test_signature_changes_with_anything_that_changes_the_crops() -> None:
    base = signature_of("det", DetectionSettings())
    assert base == signature_of("det", IndexParams(limit=5, chunk_size=3).detection)  # not detection settings
    assert base != signature_of("det2", DetectionSettings())
    assert base != signature_of("det", DetectionSettings(padding=0.1))
    assert base != signature_of("det", DetectionSettings(classes=["cat"]))
    # Embedders are not in it (each one's vectors are planned apart); the older signature had them.
    assert legacy_signature_of("det", "emb", DetectionSettings()) != legacy_signature_of(
        "det", "emb2", DetectionSettings()
    )
    assert base != legacy_signature_of("det", "emb", DetectionSettings())


def test_tiles_change_the_signature_and_an_index_without_them_keeps_the_one_it_had() -> None:
    """Indexes made before tiles and proposals existed must find their detector's boxes standing: the signature
    of the detector alone is pinned here, and is what `detector_signature_of` gives whatever else is asked."""
    alone = DetectionSettings(proposals=0)
    assert signature_of("det", alone) == "ebda0b88141c2314"  # as computed before tiles (at 5b7e7b9)
    assert signature_of("yolov10x.pt", DetectionSettings(max_detections=5, proposals=0)) == "2b44cbfdc5f32a7a"
    assert detector_signature_of("det", DetectionSettings(tiles=[2, 3])) == "ebda0b88141c2314"
    assert signature_of("det", DetectionSettings()) != "ebda0b88141c2314"  # proposals by default: re-cut, not detected
    tiled = signature_of("det", DetectionSettings(tiles=[2, 3]))
    assert tiled not in (signature_of("det", DetectionSettings()), signature_of("det", DetectionSettings(tiles=[2])))
    assert tiled == signature_of("det", DetectionSettings(tiles=[3, 2, 2]))  # the same levels, the same tiles
    assert signature_of("det", DetectionSettings(whole_frame_area=0.5, tiles=[2])) == signature_of(
        "det", DetectionSettings(tiles=[2])
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"workers": 2}, "workers: the thread runner runs one chunk"),
        ({"cluster_address": "ray://head:10001"}, "cluster_address: needs --task-runner ray or dask"),
        ({"task_runner": "ray", "cluster_address": "tcp://head:8786"}, "a Ray address is ray://host:port or auto"),
        ({"task_runner": "dask", "cluster_address": "head:8786"}, "a Dask scheduler address is tcp://host:port"),
        ({"task_runner": "dask", "gpus_per_worker": 1}, "gpus_per_worker: only the ray runner"),
        ({"task_runner": "ray", "workers": 0}, "greater than or equal to 1"),
    ],
)
def test_runner_options_that_do_not_fit_the_runner_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IndexParams(**fields)


def test_object_store_settings_become_lance_options_and_keep_the_secret_out_of_reprs() -> None:
    params = IndexParams(
        db_uri="s3://bucket/db",
        s3_endpoint="http://127.0.0.1:9000",
        s3_region="eu-west-1",
        s3_access_key_id="key",
        s3_secret_access_key="very-secret",
        s3_allow_http=True,
    )
    assert params.object_store.lance_storage_options() == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1",
        "aws_access_key_id": "key",
        "aws_secret_access_key": "very-secret",
        "allow_http": "true",
    }
    assert "very-secret" not in repr(params) and "very-secret" not in params.model_dump_json()
    assert IndexParams().object_store.lance_storage_options() == {}  # the AWS credential chain decides
