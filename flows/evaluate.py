"""The `evaluate` flow: index a benchmark, then score whole-image, crop and combined search by object size.

COCO val2017 needs the real weights and the annotation files (downloaded like any source); the
synthetic world runs anywhere, offline, with the trained models committed under world/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from components.errors import SourceError
from components.evaluation import metrics
from components.evaluation.ground_truth import coco_queries, world_queries
from components.evaluation.report import markdown_report, recall_plot
from components.evaluation.synthetic import CLASS_NAMES, read_world, write_world
from components.models.embedder import load_embedder
from components.models.loading import model_id
from components.ops.preflight import check_eval_can_start
from components.search.render import data_uri
from components.store.database import Database
from components.store.reader import StoreReader
from flows import deployed
from flows.index_coco import acquire_folder, index_coco
from flows.parameters import takes_fields_of
from schemas.params import KNOWN_CHECKSUMS, EvalParams
from schemas.results import EvalSummary

MAX_K = 50


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
    device: str,
    queries: list[metrics.EvalQuery],
    setting: str,
    model_roots: list[Path] | None = None,
) -> metrics.EvalResult:
    """Score one embedder's vectors of an index (an index may hold several, each searched alone)."""
    store = StoreReader(db_uri, embedder_id=model_id(embedder))
    rank = metrics.rank_with_index(store, load_embedder(embedder, device, model_roots=model_roots), queries, MAX_K)
    return metrics.evaluate_rankings(setting, queries, rank)


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
    if params.benchmark == "world":
        name = f"world-{params.world_seed}-{params.world_scenes}"
        source = str(generate_world(out / name, params.world_seed, params.world_scenes))
        annotations = None
    else:
        name = "coco-val2017"
        source = params.source
        checksum = KNOWN_CHECKSUMS.get(params.annotations)
        annotations = acquire_folder(params.annotations, params.data_dir, checksum, policy=policy)
    results = []
    queries: list[metrics.EvalQuery] | None = None
    for padding in params.paddings:
        for max_detections in params.max_detections:
            setting = f"padding {padding:g}, max_detections {max_detections}"
            db_uri = str(out / f"{name}-padding{padding:g}-max{max_detections}" / "lancedb")
            # The first embedder indexes; each further one embeds the same stored crops (no detection).
            for embedder in params.resolved_embedders:
                index_coco(
                    source=source,
                    source_name=name,
                    limit=params.limit,
                    data_dir=params.data_dir,
                    db_uri=db_uri,
                    detector=params.resolved_detector,
                    embedder=embedder,
                    device=params.device,
                    confidence=params.confidence,
                    image_size=params.resolved_image_size,
                    padding=padding,
                    max_detections=max_detections,
                )
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
                model_roots = None if policy is None else policy.model_roots
                results.append(score_index(db_uri, embedder, params.device, quote(queries), named, model_roots))

    title = f"Retrieval quality: {name}"
    notes = [
        f"detector `{params.resolved_detector}`, "
        + ", ".join(f"embedder `{embedder}`" for embedder in params.resolved_embedders)
        + f" (over the same detections), confidence {params.confidence}",
        "categories: query 'a photo of a {name}'; relevant = images holding one; an image is small when all its "
        "instances of the category are (COCO area < 32^2 small, < 96^2 medium)",
        "bucket metrics leave the other buckets' relevant images out of the ranking; mAP = AP averaged over categories",
    ]
    report = markdown_report(title, results, notes)
    plot = recall_plot(results[0], out / f"{name}-recall.png")
    report_path = out / f"{name}-report.md"
    report_path.write_text(report + f"\n![recall@k]({plot.name})\n")
    summary = EvalSummary(
        benchmark=params.benchmark,
        report_path=str(report_path),
        plot_path=str(plot),
        means={result.setting: metrics.means(result) for result in results},
    )
    (out / f"{name}-results.json").write_text(json.dumps(summary.model_dump(), indent=1, allow_nan=True))
    with Image.open(plot) as picture:
        create_markdown_artifact(report + f"\n![recall@k]({data_uri(picture)})\n", key="eval-report")
    logger.info("report: %s", report_path)
    return summary
