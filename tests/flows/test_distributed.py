"""Scaling out: the index flow on a real local Ray (and Dask) cluster, and on a real S3-compatible server.

The distributed runs must leave the same tables as the single-process run over the same images:
same ids, same counts, same boxes, vectors equal to float precision (the workers' single-threaded
kernels add in another order than the flow process's two threads).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.store.schema import CROPS, EMBEDDINGS, IMAGES, RECORD
from components.store.writer import StoreWriter
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import IndexParams
from schemas.records import CropRecord, ImageRecord
from schemas.results import IndexReport
from schemas.settings import ObjectStoreSettings
from tests.flows.test_flows import tiny_params
from tests.s3_server import LocalS3Server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

_KEYS = {IMAGES: "image_id", CROPS: "crop_id", EMBEDDINGS: "id"}
_IGNORED = {"indexed_at", "vector", "uri"}  # times differ; vectors compared by cosine; crop files live apart


def table_rows(db_uri: str, settings: ObjectStoreSettings | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """table -> id -> row, read straight from LanceDB; each image and crop row's `record` is checked and left out.

    The `record` column repeats the row's typed columns (times and uris included), so it must hold
    the same record as they do; the typed columns are then what the runs are compared on.
    """
    import lancedb

    db = lancedb.connect(db_uri, storage_options=(settings or ObjectStoreSettings()).lance_storage_options() or None)
    tables = {
        name: {row[key]: row for row in db.open_table(name).to_arrow().to_pylist()} for name, key in _KEYS.items()
    }
    for name, model in ((IMAGES, ImageRecord), (CROPS, CropRecord)):
        for row_id, row in tables[name].items():
            assert model.model_validate_json(row.pop(RECORD)) == model.model_validate(row), (name, row_id)
    return tables


# Model outputs copied into crop and embedding rows, compared with a tolerance: the workers' kernels
# run single-threaded and add in another order than the flow process's two threads, which moves
# float32 results in their last bits (seen: ~1e-6 px, ~1e-7 in confidence). The bounds are ~1,000x
# that, and far below what a real difference is (the crop id already pins the box rounded to 0.1 px).
_CLOSE_ENOUGH = {"x1": 1e-3, "y1": 1e-3, "x2": 1e-3, "y2": 1e-3, "confidence": 1e-4, "area_fraction": 1e-5}


def assert_same_tables(got: dict[str, dict[str, dict[str, Any]]], want: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name in _KEYS:
        assert got[name].keys() == want[name].keys(), name
        for row_id, row in want[name].items():
            assert same_row(got[name][row_id], row), (name, row_id, got[name][row_id], row)
    for row_id, row in want[EMBEDDINGS].items():
        a, b = np.asarray(row["vector"]), np.asarray(got[EMBEDDINGS][row_id]["vector"])
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9999, row_id


def same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal columns, up to float noise in the model outputs a row holds (crops and embeddings alike)."""
    if a.keys() != b.keys():
        return False
    for column in a.keys() - _IGNORED:
        if column in _CLOSE_ENOUGH and a[column] is not None and b[column] is not None:
            if abs(a[column] - b[column]) > _CLOSE_ENOUGH[column]:
                return False
        elif a[column] != b[column]:
            return False
    return True


def test_rows_that_differ_only_by_float_noise_are_the_same_and_real_differences_are_not() -> None:
    crop = {"crop_id": "c", "class_name": "cup", "x1": 10.0, "y1": 5.0, "x2": 50.0, "y2": 45.0, "confidence": 0.5}
    embedding = {"id": "c", "kind": "crop", "class_name": "cup", "confidence": 0.5, "area_fraction": 0.25}
    for row in (crop, embedding):
        noisy = {key: value + 1e-7 if isinstance(value, float) else value for key, value in row.items()}
        assert same_row(noisy, row)
        assert not same_row({**row, "confidence": 0.51}, row)
        assert not same_row({**row, "class_name": "bowl"}, row)
    assert not same_row({**crop, "x1": 11.0}, crop)


def model_stage_runs(report_state: Any) -> list[Any]:
    """The model_stage task runs recorded under a flow run on this session's Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    flow_run_id = report_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="model_stage")),
        )
    return runs


@pytest.fixture(scope="module")
def single_process_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_yolo: Path, tiny_clip: Path
) -> Iterator[tuple[Path, IndexReport, dict[str, dict[str, dict[str, Any]]]]]:
    """The reference: the default thread runner over the ten photos, chunks of 3."""
    from tests.conftest import ultralytics_assets, write_scene

    folder = tmp_path_factory.mktemp("photos")
    for asset in ultralytics_assets():
        (folder / asset.name).write_bytes(asset.read_bytes())
    for seed in range(8):
        write_scene(folder / f"scene-{seed:02d}.jpg", seed)
    params = tiny_params(folder, tmp_path_factory.mktemp("thread"), tiny_yolo, tiny_clip, chunk_size=3)
    report = index_coco(**params.flat())
    yield folder, report, table_rows(params.resolved_db_uri)


@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_a_cluster_run_leaves_the_same_tables_as_the_single_process_run(
    runner: str, single_process_run: tuple, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    folder, reference, reference_rows = single_process_run
    params = tiny_params(folder, tmp_path / "data", tiny_yolo, tiny_clip, chunk_size=3, task_runner=runner, workers=2)
    environment = dict(os.environ)
    state = index_coco(**params.flat(), return_state=True)
    # The cluster's workers got their settings (a Dask nanny writes OMP_NUM_THREADS=1 and more into
    # the process starting it); this process, and what it starts later, did not keep them.
    assert dict(os.environ) == environment, {k: v for k, v in os.environ.items() if environment.get(k) != v}
    report: IndexReport = state.result()

    assert (report.images_new, report.crops, report.embeddings) == (
        reference.images_new,
        reference.crops,
        reference.embeddings,
    )
    assert_same_tables(table_rows(params.resolved_db_uri), reference_rows)
    # Four chunks ran as four task runs on the workers, recorded beside the flow run on the same API.
    assert len(model_stage_runs(state)) == 4
    assert all(run.state.is_completed() for run in model_stage_runs(state))
    # Every chunk's upserts added fragments; the run's compaction merged them.
    for table, (before, after) in report.fragments.items():
        assert before >= 4 and after == 1, (table, before, after)
    assert StoreWriter(params.resolved_db_uri).fragment_counts() == {IMAGES: 1, CROPS: 1, EMBEDDINGS: 1}

    again = index_coco(**params.flat())
    assert (again.images_new, again.model_batches) == (0, 0)


@pytest.fixture
def s3() -> Iterator[LocalS3Server]:
    server = LocalS3Server("cropsearch-test")
    yield server
    server.close()


def test_index_and_query_with_the_database_and_crops_on_s3(
    s3: LocalS3Server, single_process_run: tuple, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    folder, reference, reference_rows = single_process_run
    on_s3 = {
        "db_uri": f"s3://{s3.bucket}/index/lancedb",
        "crops_uri": f"s3://{s3.bucket}/index/crops",
        **s3.settings.model_dump(),
    }
    params = tiny_params(folder, tmp_path / "data", tiny_yolo, tiny_clip, chunk_size=3, **on_s3)
    report = index_coco(**params.flat())

    assert report.crops == reference.crops
    stored = table_rows(params.resolved_db_uri, s3.settings)
    assert_same_tables(stored, reference_rows)
    crop_keys = s3.crop_files("index/crops/")
    assert len(crop_keys) == report.crops
    assert {row["uri"] for row in stored[CROPS].values()} == {f"s3://{s3.bucket}/{key}" for key in crop_keys}
    assert not (tmp_path / "data" / "lancedb").exists() and not (tmp_path / "data" / "crops").exists()

    result = query(
        text="a bus", data_dir=tmp_path / "data", db_uri=params.resolved_db_uri, k=4, **s3.settings.model_dump()
    )
    assert len(result.hits) == 4 and result.grid_path is not None
    crop_hits = [hit for hit in result.hits if hit.crop is not None]
    for hit in crop_hits:
        assert hit.crop.uri.startswith(f"s3://{s3.bucket}/index/crops/")
        assert hit.crop.image_id == hit.image.image_id

    # Fewer boxes per image: the dropped crops leave the tables and the bucket alike.
    fewer = tiny_params(folder, tmp_path / "data", tiny_yolo, tiny_clip, chunk_size=3, max_detections=1, **on_s3)
    smaller = index_coco(**fewer.flat())
    assert smaller.images_new == 10
    assert (
        len(s3.crop_files("index/crops/"))
        == smaller.crops
        == StoreWriter(fewer.resolved_db_uri, s3.settings).counts()[CROPS]
    )


def test_an_http_endpoint_needs_allow_http_and_the_error_names_it(
    tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    from components.ops.preflight import check_index_can_start, index_embedders

    params = IndexParams(
        source=str(tmp_path),
        db_uri="s3://bucket/db",
        s3_endpoint="http://127.0.0.1:9",
        detector=str(tiny_yolo),
        embedder=str(tiny_clip),
    )
    with pytest.raises(ValueError, match="s3_allow_http"):
        check_index_can_start(params, index_embedders(params))
