"""What every step of `make bench` shares: the plan of a run, its models, the flow as users run it.

Index figures use real architectures with random weights (`bench/models.py`): yolov10x and CLIP
ViT-B/32 cost what the released models cost. Random detectors find nothing at normal thresholds,
so the crop count is fixed: confidence 0.0001, `max_detections` 8 (COCO averages ~7 objects per
image) and no minimum box size, for the pipeline and the original loop alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.models import DETECTOR_ARCHITECTURE, SMALL_DETECTOR_ARCHITECTURE, build_clip_vit_b32
from schemas.params import WORLD_EMBEDDER, IndexParams
from schemas.settings import DetectionSettings

CROPS_PER_IMAGE = 8
# Random detectors find nothing at normal thresholds: these settings make every image give exactly
# CROPS_PER_IMAGE crops, for the pipeline, the loop and the probes alike. Random boxes can cover
# most of a photo: every crop is embedded (`whole_frame_area` 1), as the loop embeds every crop.
# The loop knows only the detector's boxes: no proposals (what they cost is `bench.region_cost`'s).
FIXED_CROPS = DetectionSettings(
    confidence=0.0001, max_detections=CROPS_PER_IMAGE, min_box_pixels=1, whole_frame_area=1.0, proposals=0
)
STEPS = ("indexing", "memory", "queries", "overhead")
TARGETS = {
    "speedup": 4.0,
    "speedup_on_gpu": 10.0,
    "over_floor": 1.25,
    "memory_growth": 0.10,
    "query_p95_ms": 50.0,
    "ann_recall": 0.95,
    "reindex_share": 0.05,
    "overhead_per_decode": 2.0,
    "run_seconds": 3.0,
}


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    quick: bool
    work: Path
    device: str
    precision: str
    pipeline_images: int
    baseline_images: int
    memory_sizes: tuple[int, int]
    row_counts: tuple[int, ...]
    queries: int
    exact_queries_at_most: int
    rounds: int  # interleaved rounds of pipeline, floor and loop (see measure_indexing)
    steps: tuple[str, ...] = STEPS
    detect_batch_size: int | None = None  # None: the pipeline's default for the device
    embed_batch_size: int | None = None
    decode_threads: int | None = None


def plan_from(args: argparse.Namespace) -> Plan:
    from components.models.devices import pick_device

    common: dict[str, Any] = {
        "work": args.work.resolve(),
        "device": args.device,
        "precision": args.precision,
        "steps": tuple(args.only or STEPS),
        "detect_batch_size": args.detect_batch_size,
        "embed_batch_size": args.embed_batch_size,
        "decode_threads": args.decode_threads,
    }
    if args.quick:
        rows = tuple(args.rows) if args.rows else (2_000, 6_000)
        sizes = {"pipeline_images": 6, "baseline_images": 2, "memory_sizes": (8, 24), "rounds": 2}
        return Plan(quick=True, row_counts=rows, queries=20, exact_queries_at_most=20, **sizes, **common)
    rows = tuple(args.rows) if args.rows else (10_000, 100_000, 1_000_000)
    queries = {"row_counts": rows, "queries": 100, "exact_queries_at_most": 10, "memory_sizes": (200, 1_000)}
    if pick_device(args.device).startswith("cuda"):
        # A GPU indexes ~100x faster: more photos per round keep a round well above a run's fixed cost.
        return Plan(quick=False, pipeline_images=900, baseline_images=90, rounds=3, **queries, **common)
    return Plan(quick=False, pipeline_images=100, baseline_images=20, rounds=5, **queries, **common)


@dataclass
class Models:
    detector: str  # a .pt of random weights, so the pipeline and the loop load the same weights
    small_detector: str
    embedder: str


def prepare_models(plan: Plan) -> Models:
    from ultralytics import YOLO

    folder = plan.work / "models"
    folder.mkdir(parents=True, exist_ok=True)
    saved = {}
    for architecture in {DETECTOR_ARCHITECTURE, SMALL_DETECTOR_ARCHITECTURE}:
        path = folder / architecture.replace(".yaml", "-random.pt")
        if not path.is_file():
            YOLO(architecture).save(str(path))
        saved[architecture] = str(path)
    detector = saved[SMALL_DETECTOR_ARCHITECTURE if plan.quick else DETECTOR_ARCHITECTURE]
    embedder = str(WORLD_EMBEDDER) if plan.quick else str(build_clip_vit_b32(folder / "clip-vit-b32"))
    return Models(detector=detector, small_detector=saved[SMALL_DETECTOR_ARCHITECTURE], embedder=embedder)


def index_params(plan: Plan, source: Path, data_dir: Path, detector: str, embedder: str) -> IndexParams:
    chosen = {
        name: getattr(plan, name)
        for name in ("detect_batch_size", "embed_batch_size", "decode_threads")
        if getattr(plan, name) is not None
    }  # the rest stay the pipeline's defaults
    return IndexParams(
        source=str(source),
        data_dir=data_dir,
        detector=detector,
        embedder=embedder,
        device=plan.device,
        precision=plan.precision,  # type: ignore[arg-type]
        **FIXED_CROPS.model_dump(exclude_unset=True),
        **chosen,
    )


def run_flow(params: IndexParams) -> tuple[float, Any]:
    """Seconds of one index run as `cropsearch index` runs it, and its report."""
    from flows.index_coco import index_coco
    from flows.runners import no_heartbeats_without_a_server

    started = time.perf_counter()
    with no_heartbeats_without_a_server():
        report = index_coco(**params.flat())
    return time.perf_counter() - started, report


def child_environment() -> dict[str, str]:
    """This environment for a child process run from the repository: offline hub, no Prefect telemetry."""
    repo = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def in_fresh_process(module: str, payload: str) -> dict[str, Any]:
    """Run `python -m <module> <payload>` (a measurement with nothing loaded before it) and return its JSON."""
    child = subprocess.run(
        [sys.executable, "-m", module, payload],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if child.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def plan_json(plan: Plan) -> str:
    return json.dumps({**vars(plan), "work": str(plan.work)})


def plan_of_json(payload: dict[str, Any]) -> Plan:
    return Plan(**{**payload, "work": Path(payload["work"])})


@dataclass
class Figures:
    machine: dict[str, Any]
    plan: dict[str, Any]
    pipeline: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    queries: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
