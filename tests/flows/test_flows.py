"""The index-coco and query flows end to end under a real (temporary) Prefect API, with tiny real models."""

from __future__ import annotations

import base64
import gc
import io
import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from components.errors import CropsearchError, SourceError
from components.models.devices import decide_machine
from components.ops.preflight import download_path
from components.pipeline.report import report_table
from components.store.schema import CROPS, EMBEDDINGS, IMAGES
from components.store.writer import StoreWriter
from flows.index_coco import index_coco
from flows.query import query
from schemas.params import IndexParams, QueryParams
from schemas.records import EmbeddingRecord
from schemas.stages import INDEX_STAGES, STAGE_MARKER
from tests.conftest import write_scene
from tests.http_server import LocalHttpServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def tiny_params(
    source: Path | str, data_dir: Path, tiny_yolo: Path, tiny_clip: Path, **overrides: object
) -> IndexParams:
    # Random weights score every box near zero: a near-zero threshold makes them produce crops.
    settings = {"confidence": 0.0001, "max_detections": 3, "min_box_pixels": 8, "chunk_size": 4, "device": "cpu"}
    return IndexParams(
        source=str(source),
        data_dir=data_dir,
        detector=str(tiny_yolo),
        embedder=str(tiny_clip),
        **{**settings, **overrides},
    )


def table_ids(db_uri: str) -> dict[str, set[str]]:
    import lancedb

    db = lancedb.connect(db_uri)
    keys = {IMAGES: "image_id", CROPS: "crop_id", EMBEDDINGS: "id"}
    return {name: set(db.open_table(name).to_arrow().column(key).to_pylist()) for name, key in keys.items()}


def test_index_then_query_then_reindex_does_no_model_work(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip)
    first = index_coco(**params.flat())
    assert first.images_seen == 10 and first.images_new == 10 and first.skipped == []
    assert first.crops > 0 and first.embeddings == 10 + first.crops
    assert first.model_batches > 0
    store = StoreWriter(params.resolved_db_uri)
    assert store.counts() == {"images": 10, "crops": first.crops, "embeddings": first.embeddings}
    ids_after_first = table_ids(params.resolved_db_uri)
    crop_files = sorted((tmp_path / "data" / "crops").rglob("*.jpg"))
    assert len(crop_files) == first.crops
    # The report's seconds add up: the stages, one after another, and what is left between them make the
    # run's total (it showed a negative "waiting" once: worker times subtracted from a chunk's wall time).
    shown = {row["measure"]: float(row["value"]) for row in report_table(first) if row["measure"].startswith("seconds")}
    assert {"seconds: model work", "seconds: write", "seconds: other", "seconds: total"} <= set(shown)
    assert min(shown.values()) >= 0 and first.model_seconds["detect"] > 0 and first.model_seconds["embed"] > 0
    stages = sum(value for measure, value in shown.items() if measure != "seconds: total")
    assert stages == pytest.approx(shown["seconds: total"], abs=0.01 * len(shown))  # each shown to 2 decimals
    # The machine was decided once for the run, from this CPU, and the report shows the decision.
    assert first.machine == decide_machine("cpu", "auto", params.batching)
    assert {row["measure"]: row["value"] for row in report_table(first)}["machine"] == first.machine.describe()

    result = query(text="a potted plant", data_dir=tmp_path / "data", embedder=str(tiny_clip), k=5)
    assert [hit.rank for hit in result.hits] == [1, 2, 3, 4, 5]
    assert len({hit.image.image_id for hit in result.hits}) == 5  # one hit per parent
    scores = [hit.score for hit in result.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in result.hits:
        assert Path(hit.image.uri).parent == photo_folder.resolve()
        if hit.kind == "crop":
            assert hit.crop is not None and hit.crop.image_id == hit.image.image_id and Path(hit.crop.uri).is_file()
        else:
            assert hit.crop is None
    assert result.grid_path is not None and Image.open(result.grid_path).size == (5 * 224, 2 * 242)

    second = index_coco(**params.flat())
    assert (second.images_new, second.model_batches, second.crops, second.embeddings) == (0, 0, 0, 0)
    assert second.images_already_indexed == 10
    assert table_ids(params.resolved_db_uri) == ids_after_first
    assert sorted((tmp_path / "data" / "crops").rglob("*.jpg")) == crop_files


def latest_artifact(key: str) -> object:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    return artifact


def test_runs_publish_report_progress_and_hits_artifacts(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, chunk_size=3)
    report = index_coco(**params.flat())
    assert latest_artifact("index-progress").data == 100.0
    table = json.loads(latest_artifact("index-report").data)
    assert {"measure": "images indexed now", "value": "10"} in table
    assert {"measure": "crops", "value": str(report.crops)} in table
    result = query(text="a bus", data_dir=tmp_path / "data", k=2)
    hits = latest_artifact("query-hits").data
    assert "| rank | score | kind | class | box | hit | parent (box drawn) | parent file |" in hits
    assert all(hit.image.uri in hits for hit in result.hits) and str(result.grid_path) in hits
    thumbnails = [decoded(uri) for uri in re.findall(r"\((data:image/jpeg;base64,[^)]+)\)", hits)]
    assert len(thumbnails) == 2 * len(result.hits) and all(0 < max(t.size) <= 160 for t in thumbnails)
    grid = decoded(latest_artifact("query-grid").data)
    assert grid.size == Image.open(result.grid_path).size  # the same picture as the PNG on disk


def test_index_progress_advances_chunk_by_chunk(photo_folder: Path, tmp_path: Path) -> None:
    """Issue 26, item 5: progress 100 is set at the end anyway; a person watching must see it move before."""
    from components.models.embedder import load_embedder

    spec = "plugin:tests.plugins:progress_watching_embedder"
    # The instance the flow will load: plug-ins load once per process.
    watcher = load_embedder(spec, decide_machine("cpu", "fp32"))
    watcher.progress_seen.clear()  # type: ignore[attr-defined]
    plugins = {"detector": "plugin:tests.plugins:colour_blob_detector", "embedder": spec, "device": "cpu"}
    index_coco(source=str(photo_folder), data_dir=tmp_path / "data", chunk_size=2, **plugins)
    seen = watcher.progress_seen  # type: ignore[attr-defined]
    # Five chunks; chunk n+2's model work starts once chunk n is written, so 20-60% must show.
    assert any(0.0 < value < 100.0 for value in seen), seen
    assert seen == sorted(seen)


def decoded(uri: str) -> Image.Image:
    header, _, payload = uri.partition(",")
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_changed_settings_reindex_and_drop_stale_crops(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    # The detector's boxes alone: what a detector setting changes (proposals have tests/flows/test_regions_added.py).
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, max_detections=3, proposals=0)
    index_coco(**params.flat())
    fewer = index_coco(**{**params.flat(), "max_detections": 1})
    assert fewer.images_new == 10 and fewer.crops <= 10
    counts = StoreWriter(params.resolved_db_uri).counts()
    assert counts == {"images": 10, "crops": fewer.crops, "embeddings": 10 + fewer.crops}
    assert len(list((tmp_path / "data" / "crops").rglob("*.jpg"))) == fewer.crops


def test_bad_files_are_reported_and_a_changed_file_replaces_its_old_rows(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    (photo_folder / "notes.jpg").write_text("not a picture")
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, max_detections=0, proposals=0)
    report = index_coco(**params.flat())
    assert report.images_new == 10 and [Path(s.path).name for s in report.skipped] == ["notes.jpg"]

    write_scene(photo_folder / "scene-00.jpg", seed=99)  # same path, new bytes
    again = index_coco(**params.flat())
    assert again.images_new == 1 and again.images_already_indexed == 9
    store = StoreWriter(params.resolved_db_uri)
    assert store.counts() == {"images": 10, "crops": 0, "embeddings": 10}


def test_a_photo_that_left_the_folder_leaves_the_index_unless_missing_ones_are_kept(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, proposals=0)
    first = index_coco(**params.flat())
    store = StoreWriter(params.resolved_db_uri)
    before = store.counts()
    gone, kept_away, renamed = (photo_folder / f"scene-0{n}.jpg" for n in (1, 2, 3))
    gone_id = store.image_ids_by_uri(params.resolved_source_name)[str(gone.resolve())][0]
    gone_crops = {crop.crop_id for crop in store.crops_of_images([gone_id])[gone_id]}
    assert first.images_new == 10 and gone_crops  # the photo has crops, whose rows and files must go with it

    # With --keep-missing (a removable drive's photos), a photo gone from the folder stays.
    away = tmp_path / "away"
    away.mkdir()
    shutil.move(kept_away, away / kept_away.name)
    kept = index_coco(**params.model_copy(update={"keep_missing": True}).flat())
    assert kept.images_removed == 0 and store.counts() == before

    # A limited listing is not the whole folder: nothing is removed either.
    assert index_coco(**params.model_copy(update={"limit": 3}).flat()).images_removed == 0

    # By default the index mirrors the folder: both gone photos leave it, with crops, vectors and files;
    # a renamed one keeps its rows (the same bytes under a new name).
    gone.unlink()
    renamed.rename(photo_folder / "renamed.jpg")
    mirrored = index_coco(**params.flat())
    assert mirrored.images_removed == 2 and mirrored.images_new == 0
    assert {"measure": "images removed", "value": "2"} in report_table(mirrored)
    ids = table_ids(params.resolved_db_uri)
    assert gone_id not in ids[IMAGES] and len(ids[IMAGES]) == 8 and not gone_crops & ids[CROPS]
    assert gone_id not in ids[EMBEDDINGS] and not gone_crops & ids[EMBEDDINGS]
    assert not any(path.stem in gone_crops for path in (tmp_path / "data" / "crops").rglob("*.jpg"))
    uris = store.image_ids_by_uri(params.resolved_source_name)
    assert str((photo_folder / "renamed.jpg").resolve()) in uris and str(renamed.resolve()) not in uris
    hits = query(text="a scene", **QueryParams(data_dir=tmp_path / "data", k=20, render=False).flat()).hits
    assert gone_id not in {hit.image.image_id for hit in hits}

    assert index_coco(**params.flat()).images_removed == 0  # and once removed, removed once


def test_a_folder_of_only_bad_files_fails_clearly(tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_text("nope")
    with pytest.raises(SourceError, match=r"none of the 1 files .* is a readable image"):
        index_coco(**tiny_params(folder, tmp_path / "data", tiny_yolo, tiny_clip).flat())


def test_zip_over_http_is_downloaded_once_and_redownloaded_when_the_file_vanishes(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path, http_server: LocalHttpServer
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in sorted(photo_folder.iterdir())[:4]:
            zipped.write(path, f"photos/{path.name}")
    http_server.files["/photos.zip"] = buffer.getvalue()
    params = tiny_params(http_server.url("/photos.zip"), tmp_path / "data", tiny_yolo, tiny_clip, max_detections=0)

    def downloads() -> int:
        return sum(1 for r in http_server.requests if r["method"] == "GET")

    first = index_coco(**params.flat())
    assert first.images_new == 4 and downloads() == 1
    assert index_coco(**params.flat()).images_already_indexed == 4 and downloads() == 1  # cached: no transfer

    download_path(params.source, tmp_path / "data").unlink()
    shutil.rmtree(tmp_path / "data" / "sources")
    third = index_coco(**params.flat())
    assert downloads() == 2 and third.images_already_indexed == 4


def test_a_download_cut_off_mid_transfer_is_retried_and_resumed_by_the_flow(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path, http_server: LocalHttpServer
) -> None:
    """The README's "interrupted downloads are retried and resumed inside the flow", not by running it again."""
    archive = zip_of(sorted(photo_folder.iterdir())[:3])
    http_server.files["/cut.zip"] = archive
    http_server.drop_after["/cut.zip"] = len(archive) // 2  # the first transfer breaks off halfway
    params = tiny_params(http_server.url("/cut.zip"), tmp_path / "data", tiny_yolo, tiny_clip, max_detections=0)
    assert index_coco(**params.flat()).images_new == 3
    transfers = [request for request in http_server.requests if request["method"] == "GET"]
    assert len(transfers) == 2 and "Range" not in transfers[0]
    resumed_at = int(transfers[1]["Range"].removeprefix("bytes=").removesuffix("-"))  # what the cut left on disk
    assert 0 < resumed_at <= len(archive) // 2


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_run_announces_every_stage_the_crash_loop_aims_at(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path, http_server: LocalHttpServer
) -> None:
    """Issue 24: the crash loop aims its kills by these markers; a stage renamed or left silent fails here."""
    http_server.files["/stages.zip"] = zip_of(sorted(photo_folder.iterdir())[:3])
    params = tiny_params(http_server.url("/stages.zip"), tmp_path / "data", tiny_yolo, tiny_clip)
    handler, flow_runs = _Lines(), logging.getLogger("prefect.flow_runs")
    flow_runs.addHandler(handler)
    try:
        index_coco(**params.flat())
    finally:
        flow_runs.removeHandler(handler)
    announced = [(found["stage"], found["event"]) for line in handler.lines if (found := STAGE_MARKER.search(line))]
    assert [stage for stage, event in announced if event == "started"] == [
        "acquire", "download", "unzip", "register", "plan", *["model work", "write"], "compact", "index build",
    ]  # fmt: skip
    assert {stage for stage, _ in announced} == set(INDEX_STAGES)
    open_stages: list[str] = []
    for stage, event in announced:  # every stage that starts finishes, innermost first
        if event == "started":
            open_stages.append(stage)
        else:
            assert open_stages.pop() == stage
    assert open_stages == []


def zip_of(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in paths:
            zipped.write(path, path.name)
    return buffer.getvalue()


def test_two_sources_with_one_file_name_are_two_downloads(
    photo_folder: Path, tmp_path: Path, http_server: LocalHttpServer
) -> None:
    """Issue 25, item 5: after `.../a/photos.zip`, a run for `.../b/photos.zip` indexed A's photos, not fetching B."""
    photos = sorted(photo_folder.iterdir())
    http_server.files["/a/photos.zip"] = zip_of(photos[:3])
    http_server.files["/b/photos.zip"] = zip_of(photos[3:7])
    plugins = {
        "detector": "plugin:tests.plugins:colour_blob_detector",
        "embedder": "plugin:tests.plugins:mean_colour_embedder",
    }
    for name, count in (("a", 3), ("b", 4)):
        report = index_coco(
            source=http_server.url(f"/{name}/photos.zip"),
            data_dir=tmp_path / "data",
            db_uri=str(tmp_path / f"db-{name}"),
            **plugins,
        )
        assert report.images_new == count, name
    fetched = [r["path"] for r in http_server.requests if r["method"] == "GET"]
    assert fetched == ["/a/photos.zip", "/b/photos.zip"]


def test_query_by_image_and_bad_queries(photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, max_detections=0)
    index_coco(**params.flat())
    options = QueryParams(data_dir=tmp_path / "data", embedder=str(tiny_clip), k=3, kinds="image", render=False)
    probe = photo_folder / "bus.jpg"
    result = query(image=str(probe), **options.flat())
    assert result.hits[0].image.uri == str(probe.resolve())  # the image itself is its own nearest neighbour
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert result.grid_path is None
    with pytest.raises(ValueError, match="exactly one of text or image"):
        query(text="bus", image=str(probe), **options.flat())
    with pytest.raises(ValueError, match="text must not be empty"):
        query(text="  ", **options.flat())
    with pytest.raises(ValueError, match="does not exist"):
        query(image=str(tmp_path / "missing.jpg"), **options.flat())


def test_bad_files_beside_good_ones_are_reported_once_and_the_run_succeeds(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    (photo_folder / "empty.jpg").write_bytes(b"")
    (photo_folder / "error-page.jpg").write_text("<html><body>404 Not Found</body></html>")
    report = index_coco(**tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip).flat())
    assert report.images_new == 10
    assert sorted(Path(item.path).name for item in report.skipped) == ["empty.jpg", "error-page.jpg"]
    table = json.loads(latest_artifact("index-report").data)
    assert sum(1 for row in table if row["measure"] == "skipped") == 2


def test_a_zip_without_images_fails_naming_what_it_looked_for(tmp_path: Path, tiny_yolo: Path, tiny_clip: Path) -> None:
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("README.txt", "no pictures here")
    looked_for = (
        r"no photos found in .* \(looked for JPEG, .*HEIF.* files; ignored 1 file that is not a photo \(\.txt\)\)"
    )
    with pytest.raises(SourceError, match=looked_for):
        index_coco(**tiny_params(archive, tmp_path / "data", tiny_yolo, tiny_clip).flat())


def vector_index_state(db_uri: str) -> tuple[bool, int]:
    """(has a vector index, rows not in it yet) of the embeddings table."""
    import lancedb

    table = lancedb.connect(db_uri).open_table(EMBEDDINGS)
    vector_indexes = [index for index in table.list_indices() if index.columns == ["vector"]]
    return bool(vector_indexes), sum(index.num_unindexed_rows for index in vector_indexes)


def test_the_ann_index_appears_past_its_threshold_and_takes_in_later_runs(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(photo_folder.iterdir())[:8]:
        shutil.copy(path, few / path.name)
    default = tiny_params(few, tmp_path / "default", tiny_yolo, tiny_clip)
    index_coco(**default.flat())
    assert vector_index_state(default.resolved_db_uri) == (False, 0)  # 8 photos: far below 20,000 rows

    params = tiny_params(few, tmp_path / "data", tiny_yolo, tiny_clip, vector_index_min_rows=20)
    first = index_coco(**params.flat())
    assert first.embeddings >= 20 and vector_index_state(params.resolved_db_uri) == (True, 0)

    import lancedb
    import numpy as np

    rows = lancedb.connect(params.resolved_db_uri).open_table(EMBEDDINGS).to_arrow()
    vectors = np.stack(rows.column("vector").to_numpy(zero_copy_only=False))
    ids = rows.column("id").to_pylist()
    result = query(text="a red square", data_dir=tmp_path / "data", embedder=str(tiny_clip), k=3, render=False)
    top = ids[int(np.argmax(vectors @ np.asarray(result_vector(tiny_clip, "a red square"))))]
    best = result.hits[0]
    assert (best.crop.crop_id if best.crop else best.image.image_id) == top  # the index finds the exact best

    for path in sorted(photo_folder.iterdir())[8:]:
        shutil.copy(path, few / path.name)
    second = index_coco(**params.flat())
    assert second.images_new == 2 and vector_index_state(params.resolved_db_uri) == (True, 0)


def result_vector(tiny_clip: Path, text: str) -> list[float]:
    from components.models.embedder import load_embedder

    return load_embedder(str(tiny_clip), decide_machine("cpu", "fp32")).embed_texts([text])[0].tolist()


def live_embedding_records() -> int:
    return sum(1 for item in gc.get_objects() if isinstance(item, EmbeddingRecord))


def test_written_chunks_free_their_records_without_a_garbage_collection(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    # Prefect keeps each finished chunk task's result in a reference cycle; with the cyclic
    # collector off, whatever that result still holds stays alive (the bench's memory growth).
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, tiny_clip, chunk_size=3)
    gc.collect()
    before = live_embedding_records()
    gc.disable()
    try:
        report = index_coco(**params.flat())
        after = live_embedding_records()
    finally:
        gc.enable()
    assert report.embeddings > 0
    assert after == before


def test_a_folder_of_every_photo_format_indexes_each_turned_as_a_viewer_shows_it(tmp_path: Path) -> None:
    """Phones' HEIC, animated GIFs, TIFF scans, AVIF, ...: all indexed; other files named in the report."""
    from tests.photo_formats import NOT_PHOTOS, STORED_BLOCK, TURNED_BLOCK, write_every_format

    folder = tmp_path / "phone"
    turned = write_every_format(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    report = index_coco(
        source=str(folder),
        data_dir=tmp_path / "data",
        detector="plugin:tests.plugins:colour_blob_detector",
        embedder="plugin:tests.plugins:mean_colour_embedder",
    )
    assert report.images_new == len(turned) and report.crops == len(turned)
    assert [Path(item.path).name for item in report.skipped] == ["broken.jpg"]
    assert report.ignored == {".json": 2, ".txt": 1, ".mov": 1} and sum(report.ignored.values()) == len(NOT_PHOTOS)
    shown = {row["measure"]: row["value"] for row in report_table(report)}
    assert shown["files ignored"] == "4 files that are not photos (.json x2, .mov, .txt)"

    import lancedb

    db = lancedb.connect(str(tmp_path / "data" / "lancedb"))
    name_of = {row["image_id"]: Path(row["uri"]).name for row in db.open_table(IMAGES).to_arrow().to_pylist()}
    for crop in db.open_table(CROPS).to_arrow().to_pylist():
        name = name_of[crop["image_id"]]
        expected = TURNED_BLOCK if turned[name] else STORED_BLOCK
        box = (crop["x1"], crop["y1"], crop["x2"], crop["y2"])
        # Lossy formats (JPEG, HEIC, AVIF) blur the block's edge by a pixel or two.
        assert all(abs(got - want) <= 3 for got, want in zip(box, expected, strict=True)), (name, box)


def test_a_text_mode_query_searches_words_without_loading_the_model(
    photo_folder: Path, tmp_path: Path, tiny_yolo: Path, tiny_clip: Path
) -> None:
    """`--mode text` reads the text index alone: it answers while the embedder is gone, where vector search cannot."""
    embedder = tmp_path / "clip"
    shutil.copytree(tiny_clip, embedder)
    params = tiny_params(photo_folder, tmp_path / "data", tiny_yolo, embedder)
    index_coco(**params.flat())
    class_name, count = max(StoreWriter(params.resolved_db_uri).class_counts().items(), key=lambda item: item[1])
    options = QueryParams(data_dir=tmp_path / "data", kinds="crop", one_hit_per_image=False, k=count, render=False)

    shutil.rmtree(embedder)
    result = query(text=class_name, **{**options.flat(), "mode": "text"})
    assert result.mode == "text" and len(result.hits) == count
    assert {hit.crop.class_name for hit in result.hits if hit.crop} == {class_name}
    with pytest.raises(CropsearchError, match="embedder"):
        query(text=class_name, **options.flat())  # auto: hybrid, which needs the model
    with pytest.raises(ValueError, match=r"^mode: --mode text searches words, and this query has none"):
        query(image=str(photo_folder / "bus.jpg"), **{**options.flat(), "mode": "text"})
