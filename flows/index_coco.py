"""The `index-coco` flow: source -> images -> detect -> crop -> embed -> LanceDB, chunk by chunk.

Download and unzip are cached on their inputs (URL + checksum, archive hash); every other task
is cheap to decide and re-runs skip images already indexed with the same models and settings.
An index holds one or more embedders' vectors: new photos are embedded by all of them, and an
embedder added with `--embedder` embeds the photos already there from their stored crops, with
no detection. The tasks wrap the stages of `components/pipeline/` one to one and carry their
names; the flow body is five steps: gather the photos, plan, index the chunks, upkeep, report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency
from prefect.utilities.annotations import quote
from tqdm import tqdm

from components.errors import SourceError, StoreMismatchError
from components.ops.preflight import (
    check_index_can_start,
    index_embedders,
    index_recipe,
    recipe_of_run,
)
from components.pipeline import sources, stages
from components.pipeline.chunks import in_order
from components.pipeline.config import chunk_config, machine_for
from components.pipeline.formats import PHOTO_FORMATS, describe_ignored
from components.pipeline.report import report_table
from components.store.locks import exclusive_writer
from flows import deployed
from flows.index_tasks import (
    acquire_folder,
    announced,
    compact_tables,
    list_source_images,
    maintain_indexes,
    model_stage,
    plan_stage,
    register,
    store_writer,
    stored_crops_of,
    write_stage,
    write_vectors_stage,
)
from flows.parameters import takes_fields_of
from flows.runners import chunk_task_options, runs_on_a_temporary_api, started_chunk_runner, workers_report_here
from schemas.machine import MachinePlan
from schemas.params import ChunkConfig, IndexParams, detector_signature_of, legacy_signature_of, signature_of
from schemas.policy import OperatorPolicy
from schemas.records import ImageRecord, SkippedFile
from schemas.results import IndexReport
from schemas.stages import IndexStage

# The writer slot is leased and renewed while the run lives; a run killed without a word (its
# worker lost) frees it when the lease runs out: a minute, not Prefect's default five.
WRITER_LEASE_SECONDS = 60


@dataclass
class IndexRun:
    """One run's settings, model ids and report, as its steps share them."""

    params: IndexParams
    config: ChunkConfig
    machine: MachinePlan  # decided once for the flow's process; a cluster worker decides its own
    detector_id: str
    detector_signature: str  # of the detector's boxes alone (`report.index_signature` is of every region source)
    embedders: dict[str, str]  # id -> spec: the index's embedders and the one --embedder adds
    recorded: list[str]  # the index's embedders when the run started
    report: IndexReport
    progress_id: Any
    show_progress: bool
    started: float = field(default_factory=time.perf_counter)  # the run's wall clock starts with its checks
    mirrored: stages.FolderListing | None = None  # the folder source's listing, when the index mirrors it

    @contextmanager
    def timed(self, stage: IndexStage, seconds_as: str | None = None) -> Iterator[None]:
        """Announce the stage and add its seconds to the report (under `seconds_as` if given)."""
        started = time.perf_counter()
        with announced(stage):
            yield
        self.report.add_seconds(seconds_as or stage, time.perf_counter() - started)


def start_run(params: IndexParams, show_progress: bool, policy: OperatorPolicy | None) -> IndexRun:
    """Check that the run can start, and resolve what every step will need.

    The embedders an index records are read from the database a parameter names: in a deployed run
    each passes the operator's model policy before anything of it is read or loaded.
    """
    recipe = index_recipe(params)
    deployed.hold_recorded_detector(params, recipe, policy)
    if recipe is not None and params.detector is None:
        get_run_logger().info("with the index's detector %s", recipe.detector)
    params = params.with_the_index_detector(recipe)
    recorded = index_embedders(params)
    for spec in recorded.values():
        deployed.hold_model(spec, policy, "embedder recorded in the index")
    detector_id, embedders = check_index_can_start(params, recorded)
    for embedder_id, spec in embedders.items():
        if embedder_id not in recorded:  # --embedder was held with the parameters; the default for a new index here
            deployed.hold_model(spec, policy, "embedder")
    signature = signature_of(detector_id, params.detection)
    config = chunk_config(params, list(embedders.values()), None if policy is None else policy.model_roots)
    machine = machine_for(config)
    return IndexRun(
        params=params,
        config=config,
        machine=machine,
        detector_id=detector_id,
        detector_signature=detector_signature_of(detector_id, params.detection),
        embedders=embedders,
        recorded=list(recorded),
        report=IndexReport(
            source=params.source, db_uri=params.resolved_db_uri, index_signature=signature, machine=machine
        ),
        progress_id=create_progress_artifact(0.0, key="index-progress", description=f"indexing {params.source}"),
        show_progress=show_progress,
    )


def gather_photos(run: IndexRun, policy: OperatorPolicy | None) -> list[ImageRecord]:
    """The source's photos on local disk, listed and registered (hashed, sized); what was left out is reported."""
    params, report, logger = run.params, run.report, get_run_logger()
    with run.timed("acquire"):
        folder = acquire_folder(params.source, params.data_dir, params.resolved_checksum, run.show_progress, policy)
        listed = list_source_images(folder, params.limit, links_may_leave=policy is None)
    paths, report.ignored = listed.images, listed.ignored
    if sources.classify_source(params.source) == "folder" and params.limit is None and not params.keep_missing:
        # A zip is a snapshot (a new one adds to the index), and a limited listing is not the whole folder.
        run.mirrored = stages.FolderListing(str(folder), frozenset(str(path.resolve()) for path in paths))
    outside = "a link to a file outside the source; deployed runs index only what is in it"
    report.skipped.extend(SkippedFile(path=str(path), reason=outside) for path in listed.links_out)
    if report.ignored:
        logger.info("ignored %s", describe_ignored(report.ignored))
    if not paths:
        passed_over = f"; ignored {describe_ignored(report.ignored)}" if report.ignored else ""
        raise SourceError(f"no photos found in {folder} (looked for {', '.join(PHOTO_FORMATS)} files{passed_over})")
    with run.timed("register"):
        images, skipped = register(quote(paths), params.resolved_source_name, run.machine.decode_threads)
        report.skipped.extend(skipped)
    if not images:
        reasons = "; ".join(f"{item.path}: {item.reason}" for item in skipped[:3])
        raise SourceError(f"none of the {len(paths)} files in {folder} is a readable image ({reasons})")
    report.images_seen = len(paths)
    return images


def follow_embedders_changed_while_waiting(run: IndexRun) -> None:
    """Bring the run's embedders in line with the index's as they are now that the writer slot is ours.

    They were read when the run started, and a run that waited may find them changed. One dropped
    meanwhile is left out (writing it would make its table again, half full). One added meanwhile
    is not taken up (its weights were never checked by this run): the photos this run writes lose
    their rows in its table (`write_stage`), so the next run embeds them with it.
    """
    held_now = set(store_writer(run.params).vector_tables())
    dropped = [embedder for embedder in run.recorded if embedder not in held_now]
    added = sorted(held_now - set(run.embedders))
    for embedder in dropped:
        del run.embedders[embedder]
    if dropped or added:
        get_run_logger().warning(
            "the index's embedders changed while this run waited to write: dropped %s, added %s; "
            "this run embeds with %s",
            ", ".join(dropped) or "none",
            ", ".join(added) or "none",
            ", ".join(run.embedders),
        )
    if not run.embedders:
        raise StoreMismatchError(
            f"every embedder this run was to embed with was dropped from the index at "
            f"{run.params.resolved_db_uri} while it waited to write; nothing was written: give --embedder"
        )


def plan(run: IndexRun, images: list[ImageRecord]) -> stages.IndexPlan:
    """The model work left; the store is brought in line with moved and changed files first."""
    follow_embedders_changed_while_waiting(run)
    legacy = sorted(
        {legacy_signature_of(run.detector_id, embedder, run.params.detection) for embedder in run.embedders}
    )
    with run.timed("plan"):
        store_writer(run.params).record_recipe(recipe_of_run(run.params))
        signatures = (run.report.index_signature, run.detector_signature)
        planned = plan_stage(run.params, quote(images), signatures, list(run.embedders), legacy, quote(run.mirrored))
    todo = planned.detect
    run.report.images_already_indexed = len(images) - len(todo) - len(planned.recut)
    run.report.images_recut = len(planned.recut)
    run.report.images_removed = planned.removed
    logger = get_run_logger()
    if planned.removed:
        logger.info("%d photos left %s: removed with their crops and vectors", planned.removed, run.params.source)
    if planned.upgraded:
        logger.info("%d images indexed before several embedders: their signature rewritten", planned.upgraded)
    if not todo and not planned.recut:
        logger.info("nothing to detect: all %d images are already indexed with these models and settings", len(images))
    else:
        logger.info(
            "%d images found, %d already indexed, %d to index in chunks of %d",
            *(len(images), run.report.images_already_indexed, len(todo), run.params.batching.chunk_size),
        )
    if planned.recut:
        logger.info(
            "%d indexed images get new regions beyond the detector's (proposals, tiles): cut from their stored "
            "boxes, no detection",
            len(planned.recut),
        )
    for embedder, missing in planned.embed.items():
        logger.info(
            "%d indexed images to embed with %s (from their stored crops, no detection)", len(missing), embedder
        )
    return planned


def index_in_chunks(run: IndexRun, todo: list[ImageRecord], embed_only: str | None = None, recut: bool = False) -> None:
    """Each chunk's model work on the task runner, written here as it finishes: one chunk durable at a time.

    With `embed_only` (an embedder id), the photos were detected before: that embedder alone embeds
    them and their stored crops, and only its vectors are written. With `recut`, the photos' detector
    boxes stand: the other region sources run, and only regions the index lacks are cut and embedded.
    """
    params, chunk_size = run.params, run.params.batching.chunk_size
    chunk_count = -(-len(todo) // chunk_size)
    embedder_ids = [embed_only] if embed_only else list(run.embedders)
    config = run.config.model_copy(update={"embedders": [run.embedders[embedder] for embedder in embedder_ids]})

    def submit(chunk: list[ImageRecord]) -> Any:
        # Not `quote`d: Ray hands a quoted list to the task wrapped once more. Walking a chunk's
        # image records for futures costs milliseconds; the vectors coming back are never walked.
        parameters = {"images": chunk, "config": config, "detector_id": run.detector_id, "embedder_ids": embedder_ids}
        parameters["machine"] = run.machine if params.runner.task_runner == "thread" else None  # a cluster's decides
        if embed_only or recut:
            parameters |= {"stored_crops": stored_crops_of(params, quote(chunk)), "recut": recut}
        return runner.submit(model_stage, parameters=parameters)

    doing = f"embedding with {embed_only}" if embed_only else "cutting new regions" if recut else "indexing"
    with (
        tqdm(total=len(todo), unit="img", desc=doing, disable=not (run.show_progress and todo)) as bar,
        workers_report_here(params.runner),
        started_chunk_runner(params.runner) as runner,
        chunk_task_options(params.runner),
    ):
        chunks = (todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size))
        finished = in_order(chunks, submit, ahead=params.runner.workers + 1, wait=_awaited)
        for number, (chunk, work, waited) in enumerate(finished, start=1):
            run.report.add_seconds("model work", waited)
            crops_before = run.report.crops
            if embed_only:
                write_vectors(run, embed_only, work)
            else:
                write_chunk(run, chunk, work)
            bar.update(len(chunk))
            update_progress_artifact(run.progress_id, 100.0 * min(1.0, number * chunk_size / len(todo)))
            get_run_logger().info(
                "chunk %d of %d (%s): %d images, %d crops, written %.1f s into the run",
                *(number, chunk_count, doing, len(chunk), run.report.crops - crops_before),
                time.perf_counter() - run.started,
            )


def _awaited(future: Any) -> stages.ChunkWork:
    """A chunk's model work, announced as the stage the flow spends waiting for it."""
    with announced("model work"):
        return future.result()


def write_chunk(run: IndexRun, chunk: list[ImageRecord], work: stages.ChunkWork) -> None:
    """Write one chunk's model work and empty its record lists; when this returns, the chunk is durable in LanceDB.

    Record lists are passed `quote`d: otherwise Prefect walks every field of every record looking
    for futures (measured: 16 s for the 2,300 vectors of one 256-image chunk, against 0.01 s quoted).
    """
    report = run.report
    with run.timed("write"):
        signatures = (report.index_signature, run.detector_signature)
        write_stage(
            *(run.params, quote(chunk), quote(work.crops), quote(work.embeddings), signatures, run.embedders),
            quote(work.recut),
        )
    report.images_new += len({record.image_id for record in work.embeddings if record.kind == "image"})
    report.crops += len(work.crops)
    detection = run.params.detection
    report.whole_frame_crops += sum(1 for crop in work.crops if not detection.embeds_crop(crop.area_fraction))
    _count_and_free(run, work)


def write_vectors(run: IndexRun, embedder_id: str, work: stages.ChunkWork) -> None:
    """Write one chunk of an embedder's vectors of photos detected before; durable when this returns."""
    with run.timed("write"):
        write_vectors_stage(run.params, quote(work.embeddings), run.embedders)
    embedded = sum(1 for record in work.embeddings if record.kind == "image")
    run.report.images_embedded[embedder_id] = run.report.images_embedded.get(embedder_id, 0) + embedded
    _count_and_free(run, work)


def _count_and_free(run: IndexRun, work: stages.ChunkWork) -> None:
    """Add a written chunk's figures to the report, and free its records."""
    report = run.report
    for stage, seconds in work.seconds.items():
        report.model_seconds[stage] = report.model_seconds.get(stage, 0.0) + seconds
    report.machine = work.machine or report.machine  # a cluster worker's plan, where the chunk ran on one
    report.skipped.extend(work.skipped)
    report.model_batches += work.model_batches
    report.detector_batches += work.detector_batches
    report.embeddings += len(work.embeddings)
    # Prefect keeps a finished task's result in a reference cycle (its future and the done-callback
    # the future registered), so dropping our reference frees nothing until a full garbage
    # collection, and with the models' millions of objects those come rarely: peak memory grew by
    # ~20 MB per 100 images until one did. Emptying the lists frees the chunk's records now.
    work.crops.clear()
    work.embeddings.clear()
    work.recut.clear()


def upkeep(run: IndexRun) -> None:
    """Compact the tables' fragments (one per chunk write) and keep the ANN and join-key indexes up to date."""
    logger = get_run_logger()
    if run.params.compact:
        with run.timed("compact"):
            run.report.fragments = compact_tables(run.params)
        merged = (f"{name} {before} -> {after} fragments" for name, (before, after) in run.report.fragments.items())
        logger.info("compacted: %s", ", ".join(merged))
    with run.timed("index build", seconds_as="index"):
        for change in maintain_indexes(run.params):
            logger.info("%s", change)


def publish_report(run: IndexRun) -> IndexReport:
    report = run.report
    report.seconds_total = time.perf_counter() - run.started
    update_progress_artifact(run.progress_id, 100.0)
    create_table_artifact(report_table(report), key="index-report", description=f"index of {run.params.source}")
    get_run_logger().info(
        "indexed %d new images (%d crops, %d embeddings); %d already indexed; %d files skipped",
        *(report.images_new, report.crops, report.embeddings, report.images_already_indexed, len(report.skipped)),
    )
    return report


@contextmanager
def _one_writer_at_a_time(limit_name: str | None) -> Iterator[None]:
    """Hold a slot of the server's global concurrency limit while planning and writing.

    Planning inside the slot matters: a run that waited plans after the other run's writes, so it
    finds those images done instead of indexing them a second time. Without a server (no
    PREFECT_API_URL) the run's API is a temporary one of this process alone: a limit there could
    order nothing (the database's file lock does that on one machine), and asking for it took up to
    2 s of every run.
    """
    if limit_name is None or runs_on_a_temporary_api():
        yield
        return
    logger = get_run_logger()
    started = time.perf_counter()
    with concurrency(limit_name, occupy=1, strict=False, lease_duration=WRITER_LEASE_SECONDS):
        waited = time.perf_counter() - started
        if waited > 1.0:
            logger.info("waited %.0f s for %r: another index run was writing", waited, limit_name)
        yield


@flow(name="index-coco", log_prints=False, persist_result=True)
@takes_fields_of(IndexParams)
def index_coco(*, show_progress: bool = False, **fields: Any) -> IndexReport:
    """Index a source of images (COCO val2017 by default) into LanceDB: whole images and detected crops.

    Args:
        show_progress: draw a progress bar on the terminal (the CLI turns it on)
    """
    params = IndexParams(**fields)
    policy = deployed.hold_index_run(params)
    run = start_run(params, show_progress, policy)
    images = gather_photos(run, policy)
    # The server-wide limit serialises deployments; the file lock covers runs without a server too.
    with _one_writer_at_a_time(params.writer_limit), exclusive_writer(params.resolved_db_uri):
        planned = plan(run, images)
        index_in_chunks(run, planned.detect)
        index_in_chunks(run, planned.recut, recut=True)
        for embedder, detected_before in planned.embed.items():
            index_in_chunks(run, detected_before, embed_only=embedder)
        upkeep(run)
    return publish_report(run)
