"""The index flow's Prefect tasks, one per stage of `components/pipeline/` (and the cached download and unzip),
and how a run gets its source onto local disk. `flows/index_coco.py` wires them into the flow.

Download and unzip are cached on their inputs (URL + checksum, archive hash); every other task is
cheap to decide, so it is never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.errors import InterruptedDownload
from components.ops import trust
from components.ops.preflight import (
    download_path,
)
from components.pipeline import sources, stages
from components.pipeline.config import machine_for
from components.pipeline.images import register_images
from components.store.objects import ObjectFiles
from components.store.writer import StoreWriter
from schemas.files import ExtractedFolder, ListedFiles, LocalFile
from schemas.machine import MachinePlan
from schemas.params import ChunkConfig, IndexParams
from schemas.policy import OperatorPolicy
from schemas.records import CropRecord, EmbeddingRecord, ImageRecord, SkippedFile
from schemas.stages import IndexStage, stage_marker

# Bump when what a cached task produces changes, so old cache entries stop matching. 2: the
# components moved into subpackages, and results pickled under the old module paths must not load.
CACHE_VERSION = "2"
R = TypeVar("R")


def _cache_key(*parts: object) -> str:
    return hashlib.sha256("|".join([CACHE_VERSION, *map(str, parts)]).encode()).hexdigest()


def store_writer(params: IndexParams) -> StoreWriter:
    return StoreWriter(params.resolved_db_uri, params.object_store)


def _is_interrupted_download(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transfers that broke off (they resume); not 404s, checksum mismatches or refused hosts."""
    return isinstance(state.result(raise_on_failure=False), InterruptedDownload)


@task(
    cache_key_fn=lambda _, p: _cache_key("download", p["url"], p["checksum"], Path(p["destination"]).resolve()),
    persist_result=True,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=_is_interrupted_download,
)
def download_source(
    url: str, destination: Path, checksum: str | None, show_progress: bool = False, policy: OperatorPolicy | None = None
) -> LocalFile:
    check_url = None if policy is None else partial(trust.check_download_url, policy=policy)
    return sources.download(url, destination, checksum, show_progress=show_progress, check_url=check_url)


@task(
    cache_key_fn=lambda _, p: _cache_key("unzip", p["archive"].sha256, Path(p["destination"]).resolve()),
    persist_result=True,
)
def unzip_source(archive: LocalFile, destination: Path) -> ExtractedFolder:
    return sources.extract_zip(Path(archive.path), destination)


@task(cache_policy=NO_CACHE, persist_result=False)
def hash_local_archive(path: Path) -> LocalFile:
    return sources.describe_file(path)


@task(cache_policy=NO_CACHE, persist_result=False)
def list_source_images(folder: Path, limit: int | None, links_may_leave: bool) -> ListedFiles:
    return sources.list_images(folder, limit, links_may_leave=links_may_leave)


@task(cache_policy=NO_CACHE, persist_result=False)
def register(paths: list[Path], source_name: str, threads: int) -> tuple[list[ImageRecord], list[SkippedFile]]:
    return register_images(paths, source_name, threads)


@task(cache_policy=NO_CACHE, persist_result=False)
def plan_stage(
    params: IndexParams,
    images: list[ImageRecord],
    signatures: tuple[str, str],
    embedders: list[str],
    legacy_signatures: list[str],
    mirrored: stages.FolderListing | None,
) -> stages.IndexPlan:
    """`signatures`: the run's index signature, and its detector's alone; `mirrored`: the folder the index mirrors."""
    files, writer = ObjectFiles(params.object_store), store_writer(params)
    source, whole_frame_area = params.resolved_source_name, params.detection.whole_frame_area
    signature, detector_signature = signatures
    return stages.plan_stage(
        *(writer, images, signature, source, files, whole_frame_area, embedders, legacy_signatures),
        crops_uri=params.resolved_crops_uri,
        detector_signature=detector_signature,
        mirrored=mirrored,
    )


@task(cache_policy=NO_CACHE, persist_result=False)
def model_stage(
    images: list[ImageRecord],
    config: ChunkConfig,
    detector_id: str,
    embedder_ids: list[str],
    stored_crops: dict[str, list[CropRecord]] | None = None,
    recut: bool = False,
    machine: MachinePlan | None = None,
) -> stages.ChunkWork:
    """Detect, crop and embed one chunk (or, given `stored_crops`, only embed, or with `recut` cut and embed
    the regions beyond the detector's stored boxes), on whichever worker the task runner chose; models load
    once per worker. `machine`: the flow's plan where the chunk runs in its process; None on a cluster,
    whose worker decides for its own machine."""
    machine = machine or machine_for(config)
    models = stages.load_chunk_models(config, machine, detector_id, embedder_ids, detect=stored_crops is None)
    return stages.model_stage(images, models, config, stored_crops, recut)


@task(cache_policy=NO_CACHE, persist_result=False)
def stored_crops_of(params: IndexParams, images: list[ImageRecord]) -> dict[str, list[CropRecord]]:
    return store_writer(params).crops_of_images([record.image_id for record in images])


@task(cache_policy=NO_CACHE, persist_result=False)
def write_stage(
    params: IndexParams,
    images: list[ImageRecord],
    crops: list[CropRecord],
    embeddings: list[EmbeddingRecord],
    signatures: tuple[str, str],
    embedder_specs: dict[str, str],
    recut: dict[str, list[CropRecord]],
) -> None:
    """`signatures`: the run's index signature, and its detector's alone."""
    writer, files = store_writer(params), ObjectFiles(params.object_store)
    signature, detector_signature = signatures
    stages.write_stage(
        *(writer, images, crops, embeddings, signature, embedder_specs, files, params.resolved_crops_uri),
        detector_signature=detector_signature,
        recut=recut,
    )


@task(cache_policy=NO_CACHE, persist_result=False)
def write_vectors_stage(params: IndexParams, embeddings: list[EmbeddingRecord], embedder_specs: dict[str, str]) -> None:
    stages.write_vectors_stage(store_writer(params), embeddings, embedder_specs)


@task(cache_policy=NO_CACHE, persist_result=False)
def compact_tables(params: IndexParams) -> dict[str, tuple[int, int]]:
    return store_writer(params).compact()


@task(cache_policy=NO_CACHE, persist_result=False)
def maintain_indexes(params: IndexParams) -> list[str]:
    return store_writer(params).maintain_indexes(params.vector_index_min_rows)


def _fresh(cached_task: Callable[..., R], still_valid: Callable[[R], bool], *args: Any) -> R:
    """Call a cached task; if the files its cached result points to vanished or changed, redo it."""
    result = cached_task(*args)
    if not still_valid(result):
        name = cached_task.name  # type: ignore[attr-defined]
        get_run_logger().warning("cached result of %s points to missing or changed files; redoing it", name)
        result = cached_task.with_options(refresh_cache=True)(*args)  # type: ignore[attr-defined]
    return result


@contextmanager
def announced(stage: IndexStage) -> Iterator[None]:
    """Log the stage's start and, unless it raised, its end: the markers `schemas/stages.py` describes."""
    logger = get_run_logger()
    logger.info(stage_marker(stage, "started"))
    yield
    logger.info(stage_marker(stage, "finished"))


def acquire_folder(
    source: str, data_dir: Path, checksum: str | None, show_progress: bool = False, policy: OperatorPolicy | None = None
) -> Path:
    """A local folder holding a source's files: a folder as is, a zip (downloaded first if a URL) unzipped; cached."""
    kind = sources.classify_source(source)
    if kind == "folder":
        return Path(source).expanduser().resolve()
    if kind == "url":
        destination = download_path(source, data_dir)
        fetched = (source, destination, checksum, show_progress, policy)
        with announced("download"):
            archive = _fresh(download_source, sources.is_unchanged, *fetched)
    else:
        archive = hash_local_archive(Path(source).expanduser())
    stem = Path(archive.path).name.removesuffix(".zip")
    destination = data_dir / "sources" / f"{stem}-{archive.sha256[:12]}"
    still_unzipped = lambda got: sources.describe_folder(Path(got.path)) == got  # noqa: E731
    with announced("unzip"):
        unzipped = _fresh(unzip_source, still_unzipped, archive, destination)
    return Path(unzipped.path)
