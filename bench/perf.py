"""Performance benchmark: indexing speed, peak memory, query latency and re-index time, in one run.

    python -m bench.perf            # the full run (about 30 min on 2 CPU cores); `make bench`
    python -m bench.perf --quick    # small models and sizes: checks the benchmark itself (CI)

Index figures use real architectures with random weights (`bench/models.py`): yolov10x and CLIP
ViT-B/32 cost what the released models cost. Random detectors find nothing at normal thresholds,
so the crop count is fixed: confidence 0.0001, `max_detections` 8 (COCO averages ~7 objects per
image) and no minimum box size, for the pipeline and the original loop alike.

Prints a table with each target beside its figure and writes every figure to JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.models import DETECTOR_ARCHITECTURE, SMALL_DETECTOR_ARCHITECTURE, build_clip_vit_b32
from bench.photos import write_photos
from bench.report import Row, machine, machine_header, render
from schemas.params import WORLD_EMBEDDER, IndexParams
from schemas.settings import DetectionSettings

CROPS_PER_IMAGE = 8
# Random detectors find nothing at normal thresholds: these settings make every image give exactly
# CROPS_PER_IMAGE crops, for the pipeline, the loop and the probes alike.
FIXED_CROPS = DetectionSettings(confidence=0.0001, max_detections=CROPS_PER_IMAGE, min_box_pixels=1)
STEPS = ("indexing", "memory", "queries")
TARGETS = {
    "speedup": 4.0,
    "speedup_on_gpu": 10.0,
    "over_floor": 1.25,
    "memory_growth": 0.10,
    "query_p95_ms": 50.0,
    "ann_recall": 0.95,
    "reindex_share": 0.05,
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

    work = args.work.resolve()
    options = {
        "steps": tuple(args.only or STEPS),
        "detect_batch_size": args.detect_batch_size,
        "embed_batch_size": args.embed_batch_size,
        "decode_threads": args.decode_threads,
    }
    if args.quick:
        rows = tuple(args.rows) if args.rows else (2_000, 6_000)
        return Plan(True, work, args.device, args.precision, 6, 2, (8, 24), rows, 20, 20, 2, **options)
    rows = tuple(args.rows) if args.rows else (10_000, 100_000, 1_000_000)
    if pick_device(args.device).startswith("cuda"):
        # A GPU indexes ~100x faster: more photos per round keep a round well above a run's fixed cost.
        return Plan(False, work, args.device, args.precision, 900, 90, (200, 1_000), rows, 100, 10, 3, **options)
    return Plan(False, work, args.device, args.precision, 100, 20, (200, 1_000), rows, 100, 10, 5, **options)


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


# -- 1. throughput, 4. re-index ----------------------------------------------------------------
#
# This host's speed drifts by up to 2x within a minute (the same 24 detector passes took 12.7 s,
# then 20.6 s, 40 s apart). Timed one after another, the pipeline, the floor and the loop would
# partly measure the drift, so they run in rounds: each round times a slice of all three back to
# back, and each ratio is the median of the rounds' own ratios (`table_rows`).


def run_flow(params: IndexParams) -> tuple[float, Any]:
    """Seconds of one index run as `cropsearch index` runs it, and its report."""
    from flows.index_coco import index_coco
    from flows.runners import no_heartbeats_without_a_server

    started = time.perf_counter()
    with no_heartbeats_without_a_server():
        report = index_coco(**params.flat())
    return time.perf_counter() - started, report


class PipelineRuns:
    """The index flow as users run it, over one source folder that each round adds new photos to.

    Each round's run indexes the photos just added (and checks that the earlier ones are unchanged,
    as every run does); once every round has run, `rerun` times a run over the unchanged source.
    """

    def __init__(self, plan: Plan, models: Models) -> None:
        self.plan, self.models = plan, models
        # Warm-up: Prefect's temporary API and model loading, which every later run reuses.
        warm_up = write_photos(plan.work / "warm-up-photos", 2, seed=99)
        shutil.rmtree(plan.work / "warm-up", ignore_errors=True)
        run_flow(self._params(warm_up, plan.work / "warm-up"))
        self.source, self.data_dir = plan.work / "pipeline-source", plan.work / "pipeline"
        for folder in (self.source, self.data_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.source.mkdir(parents=True)
        self.params = self._params(self.source, self.data_dir)

    def _params(self, photos: Path, data_dir: Path) -> IndexParams:
        return index_params(self.plan, photos, data_dir, self.models.detector, self.models.embedder)

    def run(self, new_photos: list[Path], round_number: int) -> dict[str, Any]:
        import torch

        from components.pipeline.config import chunk_config, on_this_machine

        for photo in new_photos:
            shutil.copyfile(photo, self.source / f"round-{round_number}-{photo.name}")
        seconds, report = run_flow(self.params)
        batching = on_this_machine(chunk_config(self.params)).batching
        return {
            "images": report.images_new,
            "crops": report.crops,
            "seconds": seconds,
            "seconds_per_stage": report.seconds_per_stage,
            "detect_batch_size": batching.detect_batch_size,
            "embed_batch_size": batching.embed_batch_size,
            "decode_threads": batching.decode_threads,
            "torch_threads": torch.get_num_threads(),
        }

    def rerun(self) -> dict[str, Any]:
        seconds, report = run_flow(self.params)
        return {"rerun_seconds": seconds, "rerun_images_new": report.images_new}


class ComputeFloor:
    """The model forward passes alone, at the pipeline's precision, batch sizes and input shapes.

    It uses the very networks the pipeline loaded (same weights, dtype and memory format), fed
    tensors made before the clock starts: what is left of a pipeline run beyond this is overhead.
    """

    def __init__(self, plan: Plan, models: Models, sample_photo: Path) -> None:
        import torch
        from PIL import Image

        from components.models.detector import load_detector
        from components.models.devices import pick_device, pick_precision
        from components.models.embedder import load_embedder

        self.device = pick_device(plan.device)
        self.precision = pick_precision(plan.precision, self.device)
        detector = load_detector(models.detector, plan.device, plan.precision)
        self.embedder = load_embedder(models.embedder, plan.device, plan.precision)
        params = index_params(plan, sample_photo.parent, plan.work, models.detector, models.embedder)
        # The detector's input shape after ultralytics' letterbox, taken from a real call.
        self.network = detector._model.predictor.model  # type: ignore[attr-defined]
        shapes: list[tuple[int, ...]] = []
        hook = self.network.register_forward_pre_hook(lambda _, inputs: shapes.append(tuple(inputs[0].shape)))
        detector.detect([Image.open(sample_photo).convert("RGB")], params.detection)
        hook.remove()
        self.detector_input = shapes[0][1:]
        clip = self.embedder._model  # type: ignore[attr-defined]
        size = clip.config.vision_config.image_size
        self.embedder_input = (3, size, size)
        self._torch = torch

    def seconds(self, images: int, crops: int, detect_batch_size: int, embed_batch_size: int) -> dict[str, float]:
        """Run every forward pass `images` photos with `crops` crops need, in the pipeline's batches."""
        from components.models.devices import autocast_to

        def detect(pixels: Any) -> Any:
            with autocast_to(self.device, self.precision):  # as `YoloDetector.detect` runs it
                return self.network(pixels)

        detect_seconds = self._forward_all(detect, images, detect_batch_size, self.detector_input)
        # `embed_prepared` is the pipeline's own forward step (dtype, autocast and unit rows included).
        embed_seconds = self._forward_all(
            self.embedder.embed_prepared,  # type: ignore[attr-defined]
            images + crops,
            embed_batch_size,
            self.embedder_input,
        )
        return {
            "detect_seconds": detect_seconds,
            "embed_seconds": embed_seconds,
            "seconds": detect_seconds + embed_seconds,
        }

    def _forward_all(self, run: Callable[[Any], Any], items: int, batch_size: int, shape: tuple[int, ...]) -> float:
        torch = self._torch
        sizes = [min(batch_size, items - start) for start in range(0, items, batch_size)]
        batches = {size: torch.rand(size, *shape, device=self.device) for size in set(sizes)}
        with torch.inference_mode():
            if self.device.startswith("cuda"):
                # A GPU's first pass at a new shape loads and tunes kernels (3 s in the H200's first
                # round); the pipeline paid that in its warm-up and earlier rounds.
                for batch in batches.values():
                    run(batch)
                torch.cuda.synchronize()
            started = time.perf_counter()
            for size in sizes:
                run(batches[size])
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()  # a GPU runs behind the Python that queued its work
            return time.perf_counter() - started


class OriginalLoop:
    """The write-up's loop, faithfully: one image at a time through YOLO, each crop saved, every crop
    reopened from disk and embedded alone, embeddings stacked at the end (then written once)."""

    def __init__(self, plan: Plan, models: Models, sample_photo: Path) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from ultralytics import YOLO

        from components.models.devices import pick_device

        self.work = plan.work
        self.device = pick_device(plan.device)
        self.yolo = YOLO(models.detector)
        self.clip = CLIPModel.from_pretrained(models.embedder).eval().to(self.device)
        self.processor = CLIPProcessor.from_pretrained(models.embedder)
        process_threads = torch.get_num_threads()
        self.detect(sample_photo), self.embed(sample_photo)  # warm-up, as the pipeline had
        # On a CPU, ultralytics' first predict sets torch's threads for the whole process to
        # min(8, cores - 1): the write-up's script runs its loop, CLIP included, on that many.
        self.torch_threads = torch.get_num_threads()
        torch.set_num_threads(process_threads)

    def detect(self, path: Path) -> list[list[float]]:
        found = self.yolo.predict(
            str(path),
            conf=FIXED_CROPS.confidence,
            max_det=FIXED_CROPS.max_detections,
            device=self.device,
            verbose=False,
        )
        return found[0].boxes.xyxy.tolist()

    def embed(self, path: Path) -> Any:
        import torch
        from PIL import Image

        inputs = self.processor(images=Image.open(path).convert("RGB"), return_tensors="pt").to(self.device)
        with torch.no_grad():
            return self.clip.get_image_features(**inputs).pooler_output

    def run(self, paths: list[Path], torch_threads: int | None = None) -> dict[str, Any]:
        """The loop over `paths`, at ultralytics' thread count unless `torch_threads` says otherwise."""
        import torch

        process_threads = torch.get_num_threads()
        threads = torch_threads or self.torch_threads
        torch.set_num_threads(threads)
        try:
            return {**self._run(paths), "torch_threads": threads}
        finally:
            torch.set_num_threads(process_threads)

    def _run(self, paths: list[Path]) -> dict[str, Any]:
        import lancedb
        import pyarrow as pa
        import torch
        from PIL import Image

        crops_dir = self.work / "loop-crops"
        shutil.rmtree(crops_dir, ignore_errors=True)
        crops_dir.mkdir(parents=True)
        started = time.perf_counter()
        crop_paths = []
        for path in paths:
            image = Image.open(path).convert("RGB")
            for number, box in enumerate(self.detect(path)):
                crop_file = crops_dir / f"{path.stem}-{number}.jpg"
                image.crop(tuple(box)).save(crop_file)
                crop_paths.append(crop_file)
        vectors = torch.cat([self.embed(path) for path in [*paths, *crop_paths]]).cpu().numpy()
        database = lancedb.connect(str(self.work / "loop-db"))
        rows = pa.table({"path": [str(p) for p in [*paths, *crop_paths]], "vector": list(vectors)})
        database.create_table("embeddings", rows, mode="overwrite")
        return {"images": len(paths), "crops": len(crop_paths), "seconds": time.perf_counter() - started}


def measure_indexing(plan: Plan, models: Models) -> dict[str, Any]:
    """Pipeline, compute floor and original loop, timed in `plan.rounds` interleaved rounds."""
    per_round = plan.pipeline_images // plan.rounds
    folders = [write_photos(plan.work / "photos" / f"round-{n}", per_round, seed=n) for n in range(plan.rounds)]
    sample = sorted(folders[0].glob("*.jpg"))[0]
    pipeline = PipelineRuns(plan, models)
    floor = ComputeFloor(plan, models, sample)
    loop = OriginalLoop(plan, models, sample)
    rounds = []
    for number, folder in enumerate(folders):
        photos = sorted(folder.glob("*.jpg"))
        ran = pipeline.run(photos, number)
        compute = floor.seconds(ran["images"], ran["crops"], ran["detect_batch_size"], ran["embed_batch_size"])
        looped = loop.run(photos[: plan.baseline_images // plan.rounds])
        rounds.append({"pipeline": ran, "floor": compute, "loop": looped})
        if ran["torch_threads"] != looped["torch_threads"] and not plan.quick:
            # The loop again on the pipeline's thread count: how much of the speed-up that is.
            same = loop.run(photos[: plan.baseline_images // plan.rounds], torch_threads=ran["torch_threads"])
            rounds[-1]["loop_at_pipeline_threads"] = same
        print(
            f"  round {number + 1}/{plan.rounds}: pipeline {ran['seconds']:.1f} s, floor {compute['seconds']:.1f} s, "
            f"loop {looped['seconds']:.1f} s ({looped['images']} images)",
            flush=True,
        )
    return {
        "pipeline": {**_summed([r["pipeline"] for r in rounds]), **pipeline.rerun()},
        "floor": {**_summed([r["floor"] for r in rounds]), "precision": floor.precision},
        "loop": _summed([r["loop"] for r in rounds]),
        "rounds": rounds,
    }


def _summed(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of several runs added up; what is the same in each (batch sizes) is kept once."""
    total: dict[str, Any] = {}
    for name, first in runs[0].items():
        values = [run[name] for run in runs]
        if isinstance(first, dict):
            total[name] = {key: sum(value[key] for value in values) for key in first}
        elif name.endswith(("batch_size", "threads")):
            total[name] = first
        else:
            total[name] = sum(values)
    return total


def round_ratios(rounds: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each round's own speed-up, pipeline/floor ratio and ceiling: their spread shows how much the host drifted."""
    speedups, over_floor, ceiling = [], [], []
    for one in rounds:
        pipeline, loop, floor = one["pipeline"], one["loop"], one["floor"]
        loop_per_image = loop["seconds"] / loop["images"]
        speedups.append(loop_per_image / (pipeline["seconds"] / pipeline["images"]))
        over_floor.append(pipeline["seconds"] / floor["seconds"])
        ceiling.append(loop_per_image / (floor["seconds"] / pipeline["images"]))
    return {"speedup": speedups, "over_floor": over_floor, "ceiling": ceiling}


# -- 2. memory --------------------------------------------------------------------------------


def measure_memory(plan: Plan, models: Models) -> dict[str, Any]:
    """Peak RSS of a fresh process indexing each size (yolo11n + the benchmark's CLIP: detection's
    size does not change how memory grows, and yolov10x would take 8 min for 1,000 images here)."""
    peaks = {}
    for size in plan.memory_sizes:
        photos = write_photos(plan.work / f"memory-photos-{size}", size, seed=size)
        data_dir = plan.work / f"memory-{size}"
        shutil.rmtree(data_dir, ignore_errors=True)
        params = index_params(plan, photos, data_dir, models.small_detector, models.embedder)
        # Chunks of 100 fill whole chunks at both sizes (2 vs 10 chunks); production's 256 would
        # compare a part-filled chunk of 200 with full ones and call the difference growth.
        params = params.with_flat(chunk_size=memory_chunk_size(plan))
        peaks[size] = in_fresh_process("--memory-child", params.model_dump_json())
    small, large = plan.memory_sizes
    growth = peaks[large]["indexing_peak_rss_mb"] / peaks[small]["indexing_peak_rss_mb"] - 1
    runs = {str(size): peaks[size] for size in plan.memory_sizes}
    return {"runs": runs, "growth": growth, "chunk_size": memory_chunk_size(plan)}


def in_fresh_process(flag: str, payload: str) -> dict[str, Any]:
    """Run one measurement in a new Python process (nothing loaded before it) and return its JSON."""
    child = subprocess.run(
        [sys.executable, "-m", "bench.perf", flag, payload],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if child.returncode != 0:
        raise RuntimeError(f"bench.perf {flag} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def memory_chunk_size(plan: Plan) -> int:
    return min(100, min(plan.memory_sizes))


def memory_child(params_json: str) -> None:
    """Index in this fresh process; report the peak RSS of the whole run and of the indexing alone.

    Loading the models has its own peak (weights read, then moved), the same at any dataset size;
    resetting the kernel's high-water mark after loading shows what indexing itself adds.
    """
    from components.models.detector import load_detector
    from components.models.embedder import load_embedder

    params = IndexParams.model_validate_json(params_json)
    load_detector(params.detector, params.device, params.precision)  # cached: the flow reuses them
    load_embedder(params.embedder, params.device, params.precision)
    loading_peak = _status_mb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    seconds, report = run_flow(params)
    print(
        json.dumps(
            {
                "peak_rss_mb": max(loading_peak, _status_mb("VmHWM")),
                "indexing_peak_rss_mb": _status_mb("VmHWM"),
                "models_loaded_rss_mb": loading_peak,
                "images": report.images_new,
                "seconds": seconds,
            }
        )
    )


def _status_mb(field_name: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field_name} is not in /proc/self/status")


# -- 3. query latency -------------------------------------------------------------------------


_WRITE_BATCH = 100_000  # rows per write of the synthetic index
COCO_CLASSES = "person bicycle car motorcycle bus truck boat bench bird cat dog horse sheep cow bottle cup chair couch"
QUERY_TEXTS = [
    "a potted plant behind a sofa",
    "a red bus on a city street",
    "two people playing football",
    "a cat sleeping on a laptop",
    "a bowl of fruit on a kitchen table",
]


class VectorMixture:
    """Unit vectors drawn around 2,000 centres, as CLIP embeddings cluster by content.

    Uniform random vectors would be the worst case for any ANN index and unlike real embeddings.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((2000, dim)).astype(np.float32)

    def draw(self, count: int) -> np.ndarray:
        picked = self.centres[self.rng.integers(0, len(self.centres), count)]
        vectors = picked + 0.8 * self.rng.standard_normal(picked.shape).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _ids(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{n}".encode()).hexdigest() for n in range(count)]


def write_synthetic_index(db_dir: Path, rows: int, mixture: VectorMixture, embedder_id: str) -> np.ndarray:
    """An index of `rows` embeddings as indexing COCO-like photos makes it: 1 whole image + 8 crops per photo.

    Returns the vectors (in row order) for exact search by numpy.
    """
    import lancedb
    import pyarrow as pa

    from components.store.schema import (
        CROPS,
        CROPS_SCHEMA,
        EMBEDDINGS,
        IMAGES,
        IMAGES_SCHEMA,
        embeddings_schema,
        record_rows,
    )
    from schemas.records import CropRecord, ImageRecord

    shutil.rmtree(db_dir, ignore_errors=True)
    database = lancedb.connect(str(db_dir))
    photos = rows // (CROPS_PER_IMAGE + 1)
    crops = rows - photos
    rng = np.random.default_rng(rows)
    classes = COCO_CLASSES.split()
    image_ids, crop_ids = _ids("image", photos), _ids("crop", crops)
    parent_of_crop = rng.integers(0, photos, crops)
    crop_class = [classes[c] for c in rng.integers(0, len(classes), crops)]
    now = datetime.now(UTC)
    image_records = [
        ImageRecord(
            image_id=image_id,
            uri=f"/data/coco/{n:012d}.jpg",
            source="coco-val2017",
            width=640,
            height=480,
            num_bytes=160_000,
            caption="this image contains 2 person, 1 chair",
            index_signature="bench",
            indexed_at=now,
        )
        for n, image_id in enumerate(image_ids)
    ]
    corners = rng.uniform(0, 300, (crops, 2))
    confidences, area_fractions = rng.uniform(0.25, 1.0, crops), rng.uniform(0.001, 0.5, crops)
    crop_records = [
        CropRecord(
            crop_id=crop_id,
            image_id=image_ids[parent_of_crop[n]],
            detector="yolov10x.pt",
            class_id=classes.index(crop_class[n]),
            class_name=crop_class[n],
            confidence=confidences[n],
            x1=corners[n, 0],
            y1=corners[n, 1],
            x2=corners[n, 0] + 100,
            y2=corners[n, 1] + 80,
            area_fraction=area_fractions[n],
            uri=f"/data/crops/{crop_id[:2]}/{crop_id}.jpg",
        )
        for n, crop_id in enumerate(crop_ids)
    ]
    vectors = mixture.draw(rows)
    schema = embeddings_schema(vectors.shape[1], embedder_id, embedder_id)
    embeddings_table = pa.Table.from_pydict(
        {
            "id": image_ids + crop_ids,
            "kind": ["image"] * photos + ["crop"] * crops,
            "image_id": image_ids + [image_ids[p] for p in parent_of_crop],
            "crop_id": [None] * photos + crop_ids,
            "model": [embedder_id] * rows,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            "class_name": [None] * photos + crop_class,
            "class_names": [["person", "chair"]] * photos + [[c] for c in crop_class],
            "confidence": np.concatenate([np.ones(photos), confidences]),
            "area_fraction": np.concatenate([np.ones(photos), area_fractions]),
        },
        schema=schema,
    )
    # Images and crops get their rows as the store writes them (with the `record` column).
    for name, table_schema, records in ((IMAGES, IMAGES_SCHEMA, image_records), (CROPS, CROPS_SCHEMA, crop_records)):
        created = database.create_table(name, schema=table_schema)
        for start in range(0, len(records), _WRITE_BATCH):
            rows_of_batch = record_rows(records[start : start + _WRITE_BATCH])
            created.add(pa.Table.from_pylist(rows_of_batch, schema=table_schema))
    created = database.create_table(EMBEDDINGS, schema=embeddings_table.schema)
    for batch in embeddings_table.to_batches(max_chunksize=_WRITE_BATCH):
        created.add(pa.Table.from_batches([batch]))
    return vectors


def query_latencies(encoder: Any, store: Any, probes: np.ndarray, params: Any) -> tuple[list[float], list[float]]:
    """Seconds per query (encode a text, search, fold per parent, join to records), and the encoding's part of each."""
    from components.search.ranking import find_hits

    seconds, encoding = [], []
    for number, probe in enumerate(probes):
        started = time.perf_counter()
        # The text is encoded (and timed); the search uses a vector from the data's own distribution,
        # since a random-weight text tower's vector lies near nothing.
        encoder.embed_texts([QUERY_TEXTS[number % len(QUERY_TEXTS)]])
        encoded = time.perf_counter()
        hits = find_hits(store, probe, params.search)
        seconds.append(time.perf_counter() - started)
        encoding.append(encoded - started)
        assert hits and all(hit.image.uri for hit in hits)
    return seconds, encoding


def measure_queries(plan: Plan, models: Models) -> dict[str, Any]:
    """Query figures from a fresh process, as a query is served: no detector or index run beside it."""
    payload = {**vars(plan), "work": str(plan.work), "embedder": models.embedder}
    return in_fresh_process("--queries-child", json.dumps(payload))


def queries_child(payload_json: str) -> None:
    payload = json.loads(payload_json)
    embedder = payload.pop("embedder")
    plan = Plan(**{**payload, "work": Path(payload["work"])})
    print(json.dumps(query_figures(plan, embedder)))


def query_figures(plan: Plan, embedder: str) -> dict[str, Any]:
    """p50/p95 of text query -> ranked hits joined to parents, per index size, exact and with the ANN index."""
    from components.models.embedder import load_embedder
    from components.store.reader import StoreReader
    from components.store.writer import StoreWriter
    from schemas.params import VECTOR_INDEX_MIN_ROWS, QueryParams

    encoder = load_embedder(embedder, plan.device, QueryParams().precision)
    mixture = VectorMixture(encoder.dim)
    params = QueryParams(k=10, render=False)
    results = {}
    for rows in plan.row_counts:
        db_dir = plan.work / f"query-db-{rows}"
        started = time.perf_counter()
        vectors = write_synthetic_index(db_dir, rows, mixture, "bench-clip")
        writer, store = StoreWriter(str(db_dir)), StoreReader(str(db_dir))
        # As `index-coco` leaves every table after a run (`IndexParams.compact`): one fragment each,
        # not the 10 that writing 100k rows at a time makes (which cost ~4 ms per query at 1M rows).
        writer.compact()
        written = time.perf_counter() - started
        probes = mixture.draw(plan.queries)

        exact_count = min(plan.queries, plan.exact_queries_at_most) if rows >= 1_000_000 else plan.queries
        exact, _ = query_latencies(encoder, store, probes[:exact_count], params)
        started = time.perf_counter()
        writer.maintain_indexes(min_rows=0)
        build = time.perf_counter() - started
        indexed, indexed_encoding = query_latencies(encoder, store, probes, params)
        indexed_search_and_join = [total - text for total, text in zip(indexed, indexed_encoding, strict=True)]
        recall = []
        ids_by_row = _row_ids(rows)
        for probe in probes:
            truth = set(np.argpartition(-(vectors @ probe), 10)[:10].tolist())
            found = {row["id"] for row in store.search(probe, "", 10)}
            recall.append(len({ids_by_row[n] for n in truth} & found) / 10)
        results[str(rows)] = {
            "write_and_compact_seconds": written,
            "exact_ms": _percentiles(exact),
            "index_build_seconds": build,
            "ann_ms": _percentiles(indexed),
            "ann_text_encoding_ms": _percentiles(indexed_encoding),
            "ann_search_and_join_ms": _percentiles(indexed_search_and_join),
            "ann_recall_at_10": float(np.mean(recall)),
            "auto_index_at_this_size": rows >= VECTOR_INDEX_MIN_ROWS,
        }
        shutil.rmtree(db_dir, ignore_errors=True)
    encode = []
    for number in range(plan.queries):
        started = time.perf_counter()
        encoder.embed_texts([QUERY_TEXTS[number % len(QUERY_TEXTS)]])
        encode.append(time.perf_counter() - started)
    return {"sizes": results, "text_encoding_ms": _percentiles(encode), "auto_index_min_rows": VECTOR_INDEX_MIN_ROWS}


def _row_ids(rows: int) -> list[str]:
    """Embedding ids in row order, as written by `write_synthetic_index`."""
    photos = rows // (CROPS_PER_IMAGE + 1)
    return _ids("image", photos) + _ids("crop", rows - photos)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    milliseconds = np.array(seconds) * 1000
    return {
        "p50": float(np.percentile(milliseconds, 50)),
        "p95": float(np.percentile(milliseconds, 95)),
        "n": len(seconds),
    }


# -- report -----------------------------------------------------------------------------------


@dataclass
class Figures:
    machine: dict[str, Any]
    plan: dict[str, Any]
    pipeline: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    queries: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)


def record_indexing(figures: Figures, plan: Plan, models: Models) -> None:
    measured = measure_indexing(plan, models)
    figures.pipeline, figures.floor, figures.loop = measured["pipeline"], measured["floor"], measured["loop"]
    figures.rounds = measured["rounds"]


def table_rows(figures: Figures) -> list[Row]:
    """The table's rows for the steps that ran."""
    steps = figures.plan["steps"]
    return [
        *(indexing_rows(figures) if "indexing" in steps else []),
        *(memory_rows(figures) if "memory" in steps else []),
        *(query_rows(figures) if "queries" in steps else []),
        *(reindex_rows(figures) if "indexing" in steps else []),
    ]


def indexing_rows(figures: Figures) -> list[Row]:
    pipeline, loop, floor = figures.pipeline, figures.loop, figures.floor
    per_second = pipeline["images"] / pipeline["seconds"]
    loop_per_second = loop["images"] / loop["seconds"]
    # The host's bursts of slowness hit one round's pipeline, floor or loop at a time: each ratio is
    # the median of the rounds' own ratios (the ratio of the totals is shown beside it).
    spread = round_ratios(figures.rounds)
    speedup, over_floor = float(np.median(spread["speedup"])), float(np.median(spread["over_floor"]))
    on_gpu = str(figures.plan.get("resolved_device", "cpu")).startswith("cuda")
    speedup_target = TARGETS["speedup_on_gpu" if on_gpu else "speedup"]
    of_rounds = f"median of {len(figures.rounds)} rounds"
    batches = (
        f"batches of {pipeline['detect_batch_size']} / {pipeline['embed_batch_size']}, "
        f"{pipeline['decode_threads']} decode threads, {pipeline['torch_threads']} torch threads"
    )
    rows = [
        Row(
            f"pipeline images/s (crops/s; {batches})",
            f"{per_second:.2f} ({pipeline['crops'] / pipeline['seconds']:.1f})",
        ),
        Row(
            f"original loop images/s (crops/s; {loop['torch_threads']} torch threads, as ultralytics sets them)",
            f"{loop_per_second:.2f} ({loop['crops'] / loop['seconds']:.1f})",
        ),
        Row(
            "speed-up over the original loop",
            f"{speedup:.2f}x ({of_rounds}, {_span(spread['speedup'])}; totals {per_second / loop_per_second:.2f}x)",
            f">= {speedup_target}x",
            speedup >= speedup_target,
        ),
        Row(
            "ceiling: the compute floor's own speed-up over the loop",
            f"{float(np.median(spread['ceiling'])):.2f}x ({of_rounds}, {_span(spread['ceiling'])})",
        ),
        *_same_threads_rows(figures.rounds),
        Row(
            f"pipeline time / compute floor ({floor['precision']})",
            f"{over_floor:.2f}x ({of_rounds}, {_span(spread['over_floor'])}; "
            f"totals {pipeline['seconds']:.1f} s / {floor['seconds']:.1f} s)",
            f"<= {TARGETS['over_floor']}x",
            over_floor <= TARGETS["over_floor"],
        ),
    ]
    total = sum(pipeline["seconds_per_stage"].values())
    shares = ", ".join(f"{stage} {100 * s / total:.0f}%" for stage, s in pipeline["seconds_per_stage"].items())
    rows.append(Row("share of time per stage", shares))
    return rows


def memory_rows(figures: Figures) -> list[Row]:
    rows = []
    sizes_compared = " / ".join(str(size) for size in figures.plan["memory_sizes"])
    small, large = (figures.memory["runs"][str(size)] for size in figures.plan["memory_sizes"])
    growth = figures.memory["growth"]
    rows.append(
        Row(
            f"peak RSS while indexing {sizes_compared} images "
            f"(chunks of {figures.memory['chunk_size']}, models loaded first)",
            f"{small['indexing_peak_rss_mb']:.0f} / {large['indexing_peak_rss_mb']:.0f} MB ({100 * growth:+.1f}%)",
            f"<= +{100 * TARGETS['memory_growth']:.0f}%",
            growth <= TARGETS["memory_growth"],
        )
    )
    rows.append(
        Row(
            f"peak RSS of the whole process, {sizes_compared} images",
            f"{small['peak_rss_mb']:.0f} / {large['peak_rss_mb']:.0f} MB",
        )
    )
    return rows


def query_rows(figures: Figures) -> list[Row]:
    rows = []
    largest = str(max(figures.plan["row_counts"]))
    for rows_count, sizes in figures.queries["sizes"].items():
        at_target = rows_count == largest
        rows.append(
            Row(
                f"query p50/p95 at {int(rows_count):,} rows, exact",
                f"{sizes['exact_ms']['p50']:.1f} / {sizes['exact_ms']['p95']:.1f} ms",
            )
        )
        p50, p95 = sizes["ann_ms"]["p50"], sizes["ann_ms"]["p95"]
        encoding, search_and_join = sizes["ann_text_encoding_ms"]["p50"], sizes["ann_search_and_join_ms"]["p50"]
        rows.append(
            Row(
                f"query p50/p95 at {int(rows_count):,} rows, ANN index (built in {sizes['index_build_seconds']:.1f} s)",
                f"{p50:.1f} / {p95:.1f} ms (p50s: text encoding {encoding:.1f}, search and join {search_and_join:.1f})",
                f"p95 <= {TARGETS['query_p95_ms']:.0f} ms" if at_target else "",
                p95 <= TARGETS["query_p95_ms"] if at_target else None,
            )
        )
        recall = sizes["ann_recall_at_10"]
        rows.append(
            Row(
                f"ANN recall@10 vs exact at {int(rows_count):,} rows",
                f"{recall:.3f}",
                f">= {TARGETS['ann_recall']}" if at_target else "",
                recall >= TARGETS["ann_recall"] if at_target else None,
            )
        )
    rows.append(
        Row("text encoding alone p50/p95", "{p50:.1f} / {p95:.1f} ms".format(**figures.queries["text_encoding_ms"]))
    )
    return rows


def reindex_rows(figures: Figures) -> list[Row]:
    pipeline = figures.pipeline
    share = pipeline["rerun_seconds"] / pipeline["seconds"]
    return [
        Row(
            "re-index of the unchanged source / first run",
            f"{pipeline['rerun_seconds']:.2f} s / {pipeline['seconds']:.1f} s = {100 * share:.1f}%",
            f"<= {100 * TARGETS['reindex_share']:.0f}%",
            share <= TARGETS["reindex_share"] and pipeline["rerun_images_new"] == 0,
        )
    ]


def _same_threads_rows(rounds: list[dict[str, Any]]) -> list[Row]:
    """Against the loop run on the pipeline's thread count, where the two differ (a CPU): the
    pipeline's speed-up, and the compute floor's, the most any pipeline of these forward passes reaches."""
    if not all("loop_at_pipeline_threads" in one for one in rounds):
        return []
    same = round_ratios([{**one, "loop": one["loop_at_pipeline_threads"]} for one in rounds])
    threads = rounds[0]["loop_at_pipeline_threads"]["torch_threads"]
    speedup, ceiling = float(np.median(same["speedup"])), float(np.median(same["ceiling"]))
    of_rounds = f"median of {len(rounds)} rounds"
    return [
        Row(
            f"speed-up over the loop run on {threads} torch threads too",
            f"{speedup:.2f}x ({of_rounds}, {_span(same['speedup'])})",
            f">= {TARGETS['speedup']}x",
            speedup >= TARGETS["speedup"],
        ),
        # No pipeline beats its own forward passes: a ceiling under the target proves it out of reach
        # at this precision and these batch sizes, whatever the pipeline around the models does.
        Row(
            f"ceiling: the compute floor's own speed-up over the loop on {threads} torch threads",
            f"{ceiling:.2f}x ({of_rounds}, {_span(same['ceiling'])})"
            + ("; under the target: out of reach for these forward passes" if ceiling < TARGETS["speedup"] else ""),
        ),
    ]


def _span(ratios: list[float]) -> str:
    return f"rounds {min(ratios):.2f}-{max(ratios):.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models and sizes (checks the benchmark itself)")
    parser.add_argument("--work", type=Path, default=Path("data/bench"), help="folder for photos, indexes and JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--only", action="append", choices=STEPS, help="run only this step (repeatable)")
    parser.add_argument("--rows", type=int, nargs="+", help="index sizes for query latency (default 10k 100k 1M)")
    parser.add_argument("--detect-batch-size", type=int, help="default: the pipeline's for the device")
    parser.add_argument("--embed-batch-size", type=int, help="default: the pipeline's (64)")
    parser.add_argument("--decode-threads", type=int, help="default: the pipeline's (cores, at most 8)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--queries-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.queries_child:
        queries_child(args.queries_child)
        return 0

    plan = plan_from(args)
    plan.work.mkdir(parents=True, exist_ok=True)
    from components.models.devices import pick_device

    figures = Figures(
        machine=machine(),
        plan={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(plan).items()}
        | {"resolved_device": pick_device(plan.device)},
    )
    print(machine_header(figures.machine), flush=True)
    models = prepare_models(plan)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("indexing", lambda: record_indexing(figures, plan, models)),
        ("memory", lambda: figures.memory.update(measure_memory(plan, models))),
        ("queries", lambda: figures.queries.update(measure_queries(plan, models))),
    ]
    for name, step in steps:
        if name not in plan.steps:
            continue
        started = time.perf_counter()
        step()
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)

    rows = table_rows(figures)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = plan.work / f"perf-{stamp}.json"
    out.write_text(json.dumps({**vars(figures), "table": [vars(row) for row in rows]}, indent=2, default=str))
    print("\n" + machine_header(figures.machine))
    print(render(rows))
    print(f"\nfigures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
