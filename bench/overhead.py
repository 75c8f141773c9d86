"""What the pipeline itself costs: per photo beyond models that cost nothing, and per run as a user starts one.

    python -m bench.overhead PLAN_JSON   # one measurement in a fresh process (what `bench.perf` runs)

Per photo: an index run with `bench.free_models` (eight fixed boxes per photo, one constant
vector) spends its time reading, decoding, cutting, saving and writing alone. Its cost per photo
is (first run - unchanged re-run) / photos, so a run's fixed cost (Prefect, registering, listing)
drops out, and it is set beside one Pillow decode of the same photos, on one thread.

Per run: an unchanged re-index of a 9-photo folder and a query, each `cropsearch` started as a
process exactly as a person types it, timed end to end (the world models, committed with the code):
with the warm host that `cropsearch` starts and reuses, and with `--no-host` beside them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.photos import write_photos
from bench.plan import TARGETS, Figures, Plan, child_environment, in_fresh_process, plan_json, plan_of_json, run_flow
from bench.report import Row
from schemas.params import WORLD_DETECTOR, WORLD_EMBEDDER, IndexParams

FREE_DETECTOR = "plugin:bench.free_models:fixed_boxes_detector"
FREE_EMBEDDER = "plugin:bench.free_models:constant_embedder"
RUN_COST_PHOTOS = 9
CROPSEARCH = str(Path(sys.executable).parent / "cropsearch")


def _free_model_params(plan: Plan, source: Path, data_dir: Path) -> IndexParams:
    return IndexParams(
        source=str(source),
        data_dir=data_dir,
        detector=FREE_DETECTOR,
        embedder=FREE_EMBEDDER,
        device="cpu",
        precision="fp32",
        min_box_pixels=1,
        proposals=0,  # the detector's 8 boxes a photo, as the figures before proposals were measured
        **({"decode_threads": plan.decode_threads} if plan.decode_threads else {}),
    )


def _decode_seconds(photos: list[Path]) -> float:
    """One decode of every photo as the pipeline decodes it (oriented RGB), from bytes already read, on one thread."""
    from components.pipeline.images import decode_rgb

    data = [path.read_bytes() for path in photos]
    started = time.perf_counter()
    for one in data:
        decode_rgb(io.BytesIO(one))
    return time.perf_counter() - started


def _file_seconds(crop_files: list[Path], folder: Path) -> float:
    """Seconds to write copies of these crop files as the pipeline writes its own, on one thread.

    The disk's part of the per-photo cost, on the same disk just after the same runs: on a disk
    mounted with online discard, creating files soon after thousands were deleted costs several
    times what it costs on a fresh one (docs/findings.md), and the bench deletes earlier runs first.
    """
    from components.store.objects import ObjectFiles

    files, data = ObjectFiles(), [path.read_bytes() for path in crop_files]
    started = time.perf_counter()
    for path, one in zip(crop_files, data, strict=True):
        files.write_bytes(str(folder / path.parent.name / path.name), one)
    return time.perf_counter() - started


def measure_per_photo(plan: Plan) -> dict[str, Any]:
    """Runs in a fresh process: the free models' index run, first and unchanged, and the decode reference."""
    count = 40 if plan.quick else 400
    work = plan.work / "overhead"
    shutil.rmtree(work / "data", ignore_errors=True)
    photos = write_photos(work / "photos", count, seed=7)
    run_flow(_free_model_params(plan, write_photos(work / "warm-up", 9, seed=8), work / "data" / "warm-up"))
    files = sorted(photos.glob("*.jpg"))
    decode = _decode_seconds(files)
    params = _free_model_params(plan, photos, work / "data" / "index")
    first, report = run_flow(params)
    rerun, again = run_flow(params)
    assert report.crops == 8 * count and again.images_new == 0, "the free models' runs did not index as planned"
    crop_files = sorted(Path(params.resolved_crops_uri).glob("*/*.jpg"))
    crop_files_seconds = _file_seconds(crop_files, work / "data" / "file-copies")
    return {
        "photos": count,
        "first_seconds": first,
        "rerun_seconds": rerun,
        "decode_seconds": decode,
        "per_photo_ms": 1000 * (first - rerun) / count,
        "decode_ms": 1000 * decode / count,
        "crop_files": len(crop_files),
        "crop_files_ms": 1000 * crop_files_seconds / count,
        "seconds_per_stage": report.seconds_per_stage,
    }


def _timed_command(arguments: list[str], cwd: Path) -> float:
    """`cropsearch ARGUMENTS` as a person types it (the console script, so the warm host is used), in seconds."""
    environment = {**child_environment(), "XDG_RUNTIME_DIR": str(cwd / "run")}  # hosts of this measurement only
    started = time.perf_counter()
    done = subprocess.run([CROPSEARCH, *arguments], cwd=cwd, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cropsearch {' '.join(arguments)} failed:\n{done.stderr[-2000:]}")
    return seconds


def measure_run_cost(plan: Plan) -> dict[str, float]:
    """An unchanged re-index of 9 photos and a query as processes a person starts, with the warm host and without.

    The first index run (untimed as a re-run) starts the host: its time is what the first command of a
    session costs. `--no-host` runs each command in its own process, as every command ran before the host.
    """
    work = plan.work / "run-cost"
    shutil.rmtree(work, ignore_errors=True)
    write_photos(work / "photos", RUN_COST_PHOTOS, seed=9)
    index = ["index", "--source", "photos", "--detector", str(WORLD_DETECTOR), "--embedder", str(WORLD_EMBEDDER)]
    index += ["--device", "cpu", "--data-dir", "data"]
    query = ["query", "a red circle", "--device", "cpu", "--data-dir", "data"]
    try:
        return {
            "first_seconds": _timed_command(index, work),
            "rerun_seconds": _timed_command(index, work),
            "query_seconds": _timed_command(query, work),
            "rerun_alone_seconds": _timed_command(["--no-host", *index], work),
            "query_alone_seconds": _timed_command(["--no-host", *query], work),
        }
    finally:
        _timed_command(["host", "stop"], work)


def measure_overhead(plan: Plan) -> dict[str, Any]:
    return {"per_photo": in_fresh_process("bench.overhead", plan_json(plan)), "run_cost": measure_run_cost(plan)}


def overhead_rows(figures: Figures) -> list[Row]:
    per_photo, run_cost = figures.overhead["per_photo"], figures.overhead["run_cost"]
    ratio = per_photo["per_photo_ms"] / per_photo["decode_ms"]
    return [
        Row(
            f"pipeline cost per photo beyond zero-cost models ({per_photo['photos']} photos, 8 boxes) / one decode",
            f"{per_photo['per_photo_ms']:.1f} ms / {per_photo['decode_ms']:.1f} ms = {ratio:.1f}x",
            f"<= {TARGETS['overhead_per_decode']:.0f}x",
            ratio <= TARGETS["overhead_per_decode"],
        ),
        Row(
            "  of which creating a photo's 8 crop files on this disk (the same bytes, one thread)",
            f"{per_photo['crop_files_ms']:.1f} ms",
        ),
        Row(
            f"`cropsearch index`, unchanged {RUN_COST_PHOTOS}-photo folder, as a process (warm host)",
            f"{run_cost['rerun_seconds']:.2f} s",
            f"<= {TARGETS['run_seconds']:.0f} s",
            run_cost["rerun_seconds"] <= TARGETS["run_seconds"],
        ),
        Row(
            "`cropsearch query`, a new process (warm host)",
            f"{run_cost['query_seconds']:.2f} s",
            f"<= {TARGETS['run_seconds']:.0f} s",
            run_cost["query_seconds"] <= TARGETS["run_seconds"],
        ),
        Row(
            "the same two in processes of their own (`--no-host`: every command before the host)",
            f"{run_cost['rerun_alone_seconds']:.1f} s / {run_cost['query_alone_seconds']:.1f} s",
        ),
        Row(
            f"a session's first command (starts the host; indexes the {RUN_COST_PHOTOS} photos)",
            f"{run_cost['first_seconds']:.1f} s",
        ),
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(measure_per_photo(plan_of_json(json.loads(sys.argv[1])))))
