"""The `evaluate` flow: index a benchmark, then score whole-image, crop and combined search by object size.

COCO val2017 needs the real weights and the annotation files (downloaded like any source); the
synthetic world runs anywhere, offline, with the trained models committed under world/.
With `--unknown-classes`, the detector of every index of the run cannot name those classes, and
each region source gets a fresh index of its own, scored on sized queries for named and unnamed
classes apart (`components.evaluation.regions`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from components.errors import SourceError
from components.evaluation import metrics
from components.evaluation.ground_truth import (
    Instance,
    coco_instances,
    coco_queries,
    sized_queries,
    world_instances,
    world_queries,
)
from components.evaluation.regions import (
    REGION_SEARCH,
    classes_kept,
    hidden_tag,
    index_footprint,
    index_regions,
    region_coverage,
    region_report,
    region_sources,
)
from components.evaluation.report import markdown_report, recall_plot, region_section
from components.evaluation.synthetic import CLASS_NAMES, read_world, write_world
from components.models.detector import load_detector
from components.models.devices import decide_machine
from components.models.embedder import load_embedder
from components.models.loading import model_id
from components.ops.preflight import check_eval_can_start
from components.search.render import data_uri
from components.store.database import Database
from components.store.reader import StoreReader
from flows import deployed
from flows.index_coco import acquire_folder, index_coco
from flows.parameters import takes_fields_of
from schemas.machine import MachinePlan
from schemas.params import KNOWN_CHECKSUMS, EvalParams
from schemas.results import EvalSummary, RegionSourceReport

MAX_K = 50
# Photos indexed, untimed, before the region sources' timed runs: loading the models and a flow's
# first subflow cost seconds once, which would otherwise land on whichever source came first.
WARM_UP_PHOTOS = 8


@task(cache_policy=NO_CACHE)
def generate_world(folder: Path, first_seed: int, count: int) -> Path:
    """Held-out scenes with their annotations; reused when already generated with the same seeds."""
    if (folder / "annotations.json").is_file() and len(read_world(folder)) == count:
        return folder
    write_world(folder, range(first_seed, first_seed + count))
    return folder


@task(cache_policy=NO_CACHE)
def indexed_file_names(db_uri: str, source_name: str) -> set[str]:
    return {Path(uri).name for uri in Database(db_uri).image_ids_by_uri(source_name)}


@task(cache_policy=NO_CACHE)
def score_index(
    db_uri: str,
    embedder: str,
    machine: MachinePlan,
    queries: list[metrics.EvalQuery],
    setting: str,
    model_roots: list[Path] | None = None,
    modes: list[metrics.SearchMode] | None = None,
) -> metrics.EvalResult:
    """Score one embedder's vectors of an index (an index may hold several, each searched alone)."""
    store = StoreReader(db_uri, embedder_id=model_id(embedder))
    rank = metrics.rank_with_index(store, load_embedder(embedder, machine, model_roots), queries, MAX_K)
    return metrics.evaluate_rankings(setting, queries, rank, modes=modes or metrics.MODES)


@task(cache_policy=NO_CACHE)
def detector_classes(detector: str, machine: MachinePlan, model_roots: list[Path] | None = None) -> list[str]:
    """The class names the detector has, in its order (loaded once per process: indexing reuses it)."""
    loaded = load_detector(detector, machine, model_roots)
    names = getattr(loaded, "class_names", None)
    if not isinstance(names, dict):
        raise ValueError(f"--unknown-classes: the detector {detector} does not list its class names")
    return list(names.values())


@task(cache_policy=NO_CACHE)
def fresh_folder(folder: Path) -> Path:
    """An empty folder for one region source's index, so its time, rows and disk are this run's alone."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@task(cache_policy=NO_CACHE)
def measure_footprint(db_uri: str, crops_folder: Path) -> dict[str, int]:
    return index_footprint(db_uri, crops_folder)


@task(cache_policy=NO_CACHE)
def measure_coverage(
    db_uri: str, source_name: str, instances: list[Instance], named: list[str]
) -> dict[str, dict[str, float]]:
    return region_coverage(index_regions(db_uri, source_name), instances, set(named))


def compare_region_sources(
    params: EvalParams,
    folder: Path,
    index: dict[str, Any],
    instances: list[Instance],
    model_roots: list[Path] | None,
    machine: MachinePlan,
) -> list[RegionSourceReport]:
    """Index the photos once per region source into `folder`, each fresh and timed; score its sized queries
    and which objects its regions cover.

    `index` holds the evaluation's own index settings (detector, embedder, hidden classes in
    `classes`, ...); each source lays its own over them.
    """
    queries = sized_queries(instances, set(index["classes"]))
    warm_up = fresh_folder(folder / "warm-up")
    limit = min(params.limit or WARM_UP_PHOTOS, WARM_UP_PHOTOS)
    index_coco(**{**index, "limit": limit}, db_uri=str(warm_up / "lancedb"), crops_uri=str(warm_up / "crops"))
    embedder = index["embedder"]
    reports = []
    for source in region_sources(params.region_sources):
        where = fresh_folder(folder / source.key)
        db_uri, crops = str(where / "lancedb"), where / "crops"
        started = time.perf_counter()
        index_coco(**{**index, **source.index}, db_uri=db_uri, crops_uri=str(crops))
        seconds = time.perf_counter() - started
        result = score_index(db_uri, embedder, machine, quote(queries), source.name, model_roots, [REGION_SEARCH])
        coverage = measure_coverage(db_uri, index["source_name"], quote(instances), index["classes"])
        reports.append(region_report(source, seconds, measure_footprint(db_uri, crops), result, coverage))
    shutil.rmtree(warm_up, ignore_errors=True)
    return reports


def _find(folder: Path, name: str) -> Path:
    found = sorted(folder.rglob(name))
    if not found:
        raise SourceError(f"{name} not found under {folder}; is it annotations_trainval2017?")
    return found[0]


@flow(name="evaluate", persist_result=True)
@takes_fields_of(EvalParams)
def evaluate(**fields: Any) -> EvalSummary:
    """Measure retrieval quality of whole images, crops and both, by object size, on COCO or the synthetic world."""
    params = EvalParams(**fields)
    policy = deployed.hold_eval_run(params)
    check_eval_can_start(params)
    logger = get_run_logger()
    out = params.data_dir.resolve() / "eval"
    model_roots = None if policy is None else policy.model_roots
    # Decided once, as each index run below decides for itself: the same device and precision, so
    # scoring reuses the models those runs loaded.
    machine = decide_machine(params.device)
    # Checked before any work. Classes hidden from the detector are hidden in every index of the run: its
    # detector cannot name them.
    kept: list[str] = []
    if params.unknown_classes:
        detector_names = detector_classes(params.resolved_detector, machine, model_roots)
        kept = classes_kept(detector_names, params.unknown_classes)
    if params.benchmark == "world":
        name = f"world-{params.world_seed}-{params.world_scenes}"
        source = str(generate_world(out / name, params.world_seed, params.world_scenes))
        annotations = None
    else:
        name = "coco-val2017"
        source = params.source
        checksum = KNOWN_CHECKSUMS.get(params.annotations)
        annotations = acquire_folder(params.annotations, params.data_dir, checksum, policy=policy)
    hidden = f"-without-{hidden_tag(params.unknown_classes)}" if params.unknown_classes else ""
    index: dict[str, Any] = {
        "source": source,
        "source_name": name,
        "limit": params.limit,
        "data_dir": params.data_dir,
        "detector": params.resolved_detector,
        "device": params.device,
        "confidence": params.confidence,
        "image_size": params.resolved_image_size,
        "classes": kept,
    }
    results = []
    queries: list[metrics.EvalQuery] | None = None
    names: set[str] = set()
    for padding in params.paddings:
        for max_detections in params.max_detections:
            setting = f"padding {padding:g}, max_detections {max_detections}"
            db_uri = str(out / f"{name}-padding{padding:g}-max{max_detections}{hidden}" / "lancedb")
            # The first embedder indexes; each further one embeds the same stored crops (no detection).
            for embedder in params.resolved_embedders:
                index_coco(**index, db_uri=db_uri, embedder=embedder, padding=padding, max_detections=max_detections)
            if queries is None:  # every setting indexes the same images: one set of queries serves all
                names = indexed_file_names(db_uri, name)
                if annotations is None:
                    queries = world_queries(read_world(Path(source)), CLASS_NAMES)
                else:
                    queries = coco_queries(
                        _find(annotations, "instances_val2017.json"),
                        _find(annotations, "captions_val2017.json") if params.captions_per_image else None,
                        names,
                        params.captions_per_image,
                    )
                logger.info("%d images indexed, %d queries", len(names), len(queries))
            for embedder in params.resolved_embedders:
                named = f"{setting}, embedder {Path(embedder).name}" if len(params.resolved_embedders) > 1 else setting
                results.append(score_index(db_uri, embedder, machine, quote(queries), named, model_roots))

    regions: list[RegionSourceReport] = []
    if params.unknown_classes:
        instances: list[Instance] = (
            world_instances(read_world(Path(source)))
            if annotations is None
            else coco_instances(_find(annotations, "instances_val2017.json"), names)
        )
        instances = [instance for instance in instances if instance.file_name in names]
        # The first padding and max_detections, and the first embedder, make every source's index.
        base = {**index, "embedder": params.resolved_embedders[0], "padding": params.paddings[0]}
        base["max_detections"] = params.max_detections[0]
        regions = compare_region_sources(params, out / f"{name}-regions{hidden}", base, instances, model_roots, machine)

    title = f"Retrieval quality: {name}"
    notes = [
        f"detector `{params.resolved_detector}`, "
        + ", ".join(f"embedder `{embedder}`" for embedder in params.resolved_embedders)
        + f" (over the same detections), confidence {params.confidence}",
        "categories: query 'a photo of a {name}'; relevant = images holding one; an image is small when all its "
        "instances of the category are (COCO area < 32^2 small, < 96^2 medium)",
        "bucket metrics leave the other buckets' relevant images out of the ranking; mAP = AP averaged over categories",
    ]
    if params.unknown_classes:
        notes.append(f"the detector cannot name {', '.join(params.unknown_classes)} in any index of this run")
    lead = region_section(regions, params.unknown_classes) if regions else ""
    report = markdown_report(title, results, notes, lead=lead)
    plot = recall_plot(results[0], out / f"{name}-recall.png")
    report_path = out / f"{name}-report.md"
    report_path.write_text(report + f"\n![recall@k]({plot.name})\n")
    summary = EvalSummary(
        benchmark=params.benchmark,
        report_path=str(report_path),
        plot_path=str(plot),
        means={result.setting: metrics.means(result) for result in results},
        unknown_classes=params.unknown_classes,
        region_sources=regions,
    )
    (out / f"{name}-results.json").write_text(json.dumps(summary.model_dump(), indent=1, allow_nan=True))
    with Image.open(plot) as picture:
        create_markdown_artifact(report + f"\n![recall@k]({data_uri(picture)})\n", key="eval-report")
    logger.info("report: %s", report_path)
    return summary
