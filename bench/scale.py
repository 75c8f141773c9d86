"""Workers vs throughput: the index flow on the thread runner, then on local Ray and Dask clusters.

    python -m bench.scale [--images 48] [--quick]

Same photos, same models (yolov10x + CLIP ViT-B/32 architectures with random weights, as in
`bench.perf`; `--quick`: yolo11n + the world CLIP), chunks sized so every worker gets several.
Each cluster run starts its cluster and loads the models in its workers, as a user's run would;
those seconds are part of the figure. Every run's tables are checked against the thread run's
(same ids in images, crops and embeddings). Prints a table; writes JSON beside the work folder.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from bench.photos import write_photos
from bench.plan import Plan, index_params, prepare_models
from bench.report import Row, machine, machine_header, render, write_figures
from schemas.params import IndexParams

CONFIGURATIONS = [("thread", 1), ("ray", 1), ("ray", 2), ("dask", 2)]


def table_ids(db_uri: str) -> dict[str, list[str]]:
    import lancedb

    from components.store.schema import CROPS, EMBEDDINGS, IMAGES

    db = lancedb.connect(db_uri)
    keys = {IMAGES: "image_id", CROPS: "crop_id", EMBEDDINGS: "id"}
    return {name: sorted(db.open_table(name).to_arrow().column(key).to_pylist()) for name, key in keys.items()}


def run(params: IndexParams) -> tuple[float, Any, list[float]]:
    """Seconds of the whole run, its report, and when each chunk's write started (seconds, sorted)."""
    from flows.index_coco import index_coco

    started = time.perf_counter()
    state = index_coco(**params.flat(), return_state=True)
    seconds = time.perf_counter() - started
    return seconds, state.result(), write_times(state.state_details.flow_run_id)


def write_times(flow_run_id: Any) -> list[float]:
    """Start times of the flow run's `write` task runs: one per chunk, when its model work came back."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="write_stage-")),
        )
    return sorted(run.start_time.timestamp() for run in runs if run.start_time)


def steady_images_per_second(chunk_times: list[float], chunk_size: int) -> float:
    """Throughput once the cluster is up and the models loaded: chunks after the first over their span."""
    if len(chunk_times) < 3:
        return float("nan")
    return (len(chunk_times) - 1) * chunk_size / (chunk_times[-1] - chunk_times[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="small models, 12 images (~2 min)")
    parser.add_argument("--work", type=Path, default=Path("data/bench-scale"))
    args = parser.parse_args(argv)
    images = 12 if args.quick else args.images
    work = args.work.resolve()
    # Only the models and the flow's settings come from a plan here: the other steps' sizes stay unused.
    unused = {"baseline_images": 0, "memory_sizes": (0, 0), "row_counts": (), "queries": 0, "exact_queries_at_most": 0}
    plan = Plan(quick=args.quick, work=work, device="cpu", precision="auto", pipeline_images=images, rounds=1, **unused)
    models = prepare_models(plan)
    photos = write_photos(work / "photos", images, seed=7)
    chunk_size = max(1, images // 8)  # several chunks per worker, so two workers overlap

    def params_for(name: str, runner: str, workers: int, source: Path = photos) -> IndexParams:
        base = index_params(plan, source, work / name, models.detector, models.embedder)
        return base.with_flat(task_runner=runner, workers=workers, chunk_size=chunk_size)

    # Prefect's temporary API and the flow process's models, loaded once before anything is timed.
    run(params_for("warm-up", "thread", 1, write_photos(work / "warm-up-photos", 2, seed=99)))

    results, reference = [], None
    for runner, workers in CONFIGURATIONS:
        name = f"{runner}-{workers}"
        shutil.rmtree(work / name, ignore_errors=True)
        params = params_for(name, runner, workers)
        seconds, report, chunk_times = run(params)
        ids = table_ids(params.resolved_db_uri)
        reference = reference or ids
        results.append(
            {
                "runner": runner,
                "workers": workers,
                "images": report.images_new,
                "crops": report.crops,
                "seconds": seconds,
                "images_per_second": report.images_new / seconds,
                "steady_images_per_second": steady_images_per_second(chunk_times, chunk_size),
                "seconds_to_first_chunk": chunk_times[0] - (chunk_times[-1] - seconds) if chunk_times else None,
                "same_tables_as_thread_run": ids == reference,
                "seconds_per_stage": report.seconds_per_stage,
            }
        )
        print(f"{name}: {report.images_new} images in {seconds:.1f} s", flush=True)

    first, first_steady = results[0]["images_per_second"], results[0]["steady_images_per_second"]
    rows = []
    for r in results:
        label = f"{r['runner']}, {r['workers']} worker{'s' if r['workers'] > 1 else ''}"
        rows.append(
            Row(
                f"{label}: whole run, images/s",
                f"{r['images_per_second']:.2f} ({r['seconds']:.1f} s) = {r['images_per_second'] / first:.2f}x thread",
            )
        )
        rows.append(
            Row(
                f"{label}: after the first chunk, images/s",
                f"{r['steady_images_per_second']:.2f} = {r['steady_images_per_second'] / first_steady:.2f}x thread; "
                f"same tables as thread: {r['same_tables_as_thread_run']}",
            )
        )
    facts = machine()
    print("\n" + machine_header(facts))
    print(f"{images} photos 640x480, chunks of {chunk_size}, models: {Path(models.detector).name} + CLIP")
    print(render(rows))
    out = write_figures(work, "scale", {"machine": facts, "chunk_size": chunk_size, "runs": results}, rows)
    print(f"figures: {out}")
    return 0 if all(r["same_tables_as_thread_run"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
