"""Fail-fast checks: unreachable sources and models are named within seconds, with the flag to use."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from components.errors import CropsearchError, ModelUnavailableError, SourceError, StoreMismatchError
from components.models.loading import check_detector_available, check_embedder_available, model_id
from components.ops.preflight import (
    check_eval_can_start,
    check_index_can_start,
    check_query_can_start,
    index_embedders,
)
from components.store.writer import StoreWriter
from schemas.params import EvalParams, IndexParams, QueryParams
from tests.records import crop, embedding, image


def test_missing_local_weights_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match=r"Point --detector at local weights"):
        check_detector_available(str(tmp_path / "nope.pt"))
    with pytest.raises(ModelUnavailableError, match=r"Point --embedder at local weights"):
        check_embedder_available(str(tmp_path / "nope-clip"))


def test_uncached_hub_model_fails_fast_when_offline() -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="not in the local Hugging Face cache"):
        check_embedder_available("openai/clip-vit-base-patch32")
    assert time.monotonic() - started < 10  # a limit on hangs, not a speed target


def test_model_id_of_local_weights_follows_their_bytes(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    first = model_id(str(weights))
    assert first.startswith("w.pt@") and model_id(str(weights)) == first
    weights.write_bytes(b"two")
    assert model_id(str(weights)) != first
    assert model_id("yolov10x.pt") == "yolov10x.pt"


def test_official_yolo_weights_keep_their_name_once_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolo11n.pt").write_bytes(b"as ultralytics saves it in the working directory")
    (tmp_path / "best.pt").write_bytes(b"someone's own training run")
    assert model_id("yolo11n.pt") == "yolo11n.pt"
    assert model_id("best.pt").startswith("best.pt@")


def test_an_embedder_joins_the_ones_the_index_holds(tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    db, held = tmp_path / "db", "plugin:tests.plugins:mean_colour_embedder"
    StoreWriter(str(db)).upsert_embeddings([embedding(image("a"), [1, 0, 0], model=held)], held, held)
    params = IndexParams(source=str(tmp_path), detector=str(tiny_yolo), embedder=str(tiny_clip), db_uri=str(db))
    assert check_index_can_start(params, index_embedders(params)) == (
        model_id(str(tiny_yolo)),
        {held: held, model_id(str(tiny_clip)): str(tiny_clip)},
    )
    # Without --embedder, a run keeps the index's embedders (not the default model).
    alone = params.model_copy(update={"embedder": None})
    assert check_index_can_start(alone, index_embedders(alone))[1] == {held: held}


def test_an_embedder_of_the_index_that_no_longer_loads_is_named_with_the_way_out(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    db = tmp_path / "db"
    StoreWriter(str(db)).upsert_embeddings([embedding(image("a"), [1, 0, 0], model="gone@1")], "gone@1", "/gone")
    params = IndexParams(source=str(tmp_path), detector=str(tiny_yolo), embedder=str(tiny_clip), db_uri=str(db))
    with pytest.raises(CropsearchError, match=r"the index's embedder 'gone@1' cannot be loaded: .*--drop gone@1"):
        check_index_can_start(params, index_embedders(params))


def test_a_query_with_an_embedder_the_index_lacks_is_refused(tmp_path: Path, tiny_clip: Path) -> None:
    """The README's "querying with another embedder is refused": vectors of two models never meet."""
    StoreWriter(str(tmp_path / "lancedb")).upsert_embeddings([embedding(image("a"), [1, 0, 0], model="other")], "other")
    with pytest.raises(StoreMismatchError, match=r"--embedder: .* holds no vectors of embedder .*; it holds other"):
        check_query_can_start(QueryParams(data_dir=tmp_path, embedder=str(tiny_clip)))


def test_index_refuses_a_db_path_that_is_a_file(tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    (tmp_path / "db").write_text("x")
    params = IndexParams(
        source=str(tmp_path), detector=str(tiny_yolo), embedder=str(tiny_clip), db_uri=str(tmp_path / "db")
    )
    with pytest.raises(ValueError, match="is a file"):
        check_index_can_start(params, index_embedders(params))


def test_unreachable_source_names_the_url_and_the_local_alternative(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = IndexParams(
        source="http://127.0.0.1:9/val2017.zip", data_dir=tmp_path, detector=str(tiny_yolo), embedder=str(tiny_clip)
    )
    with pytest.raises(
        SourceError, match=r"cannot reach http://127.0.0.1:9/val2017.zip: connection refused; use --source"
    ):
        check_index_can_start(params, index_embedders(params))


def test_every_unavailable_input_is_named_at_once(tmp_path: Path) -> None:
    params = IndexParams(source="http://127.0.0.1:9/val2017.zip", data_dir=tmp_path, detector=str(tmp_path / "x.pt"))
    with pytest.raises(CropsearchError) as raised:
        check_index_can_start(params, index_embedders(params))
    message = str(raised.value)
    assert message.startswith("cannot start:")
    assert all(flag in message for flag in ("--source", "--detector", "--embedder"))


def test_query_without_an_index_says_to_index_first(tmp_path: Path) -> None:
    with pytest.raises(StoreMismatchError, match=r"no index at .* run `cropsearch index` first"):
        check_query_can_start(QueryParams(data_dir=tmp_path))


def test_query_defaults_to_the_embedder_of_the_index(tmp_path: Path, tiny_clip: Path) -> None:
    store = StoreWriter(str(tmp_path / "lancedb"))
    store.upsert_embeddings(
        [embedding(image("a"), [1, 0, 0], model=model_id(str(tiny_clip)))], model_id(str(tiny_clip)), str(tiny_clip)
    )
    # Written without an index run, so without a text index: `auto` is vector search there.
    clip_id = model_id(str(tiny_clip))
    assert check_query_can_start(QueryParams(data_dir=tmp_path)) == (str(tiny_clip), clip_id, "vector")


def test_coco_evaluation_names_every_unreachable_download_and_the_offline_alternative(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = EvalParams(
        source="http://127.0.0.1:9/val2017.zip",
        annotations="http://127.0.0.1:9/annotations_trainval2017.zip",
        detector=str(tiny_yolo),
        embedder=str(tiny_clip),
        data_dir=tmp_path,
    )
    with pytest.raises(CropsearchError) as raised:
        check_eval_can_start(params)
    message = str(raised.value)
    assert "val2017.zip" in message and "annotations_trainval2017.zip" in message
    assert "--benchmark world" in message


def test_world_evaluation_needs_only_the_committed_models() -> None:
    check_eval_can_start(EvalParams(benchmark="world"))


def test_unknown_query_classes_are_named_with_the_classes_the_index_has(tmp_path: Path, tiny_clip: Path) -> None:
    store = StoreWriter(str(tmp_path / "lancedb"))
    parent = image("a")
    store.upsert_crops([crop(parent, "c1", "potted plant"), crop(parent, "c2", "person")])
    clip_id = model_id(str(tiny_clip))
    store.upsert_embeddings([embedding(parent, [1, 0, 0], model=clip_id)], clip_id, str(tiny_clip))
    check_query_can_start(QueryParams(data_dir=tmp_path, classes=["potted plant"]))
    for asked in (["plant", "person"], ["x' OR 1=1 --"]):
        with pytest.raises(ValueError, match=r"classes: .* not in the index; it has: person, potted plant") as raised:
            check_query_can_start(QueryParams(data_dir=tmp_path, classes=asked))
        assert repr(asked[0]) in str(raised.value)
