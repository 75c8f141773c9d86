"""Where one chunk's stages spend their time, outside Prefect, with the pipeline's own functions.

    python -m bench.device.stage_probe WORK DETECTOR EMBEDDER DEVICE PRECISION BATCH IMAGES
    python -m bench.device.stage_probe /tmp/w yolov10x.yaml b32 cuda fp16 32 256   # as run on the H200

EMBEDDER `b32` builds the benchmark's CLIP ViT-B/32 (random weights) in WORK. Prints per-image
times: decoding on one and on 8 threads; the detector on decoded images, with its network's share
and a profile of the rest; then a chunk's whole model stage with 1 and 8 decode threads.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.models import build_clip_vit_b32
from bench.photos import write_photos
from bench.plan import FIXED_CROPS
from components.models.detector import load_detector
from components.models.devices import decide_machine
from components.models.embedder import load_embedder
from components.pipeline import stages
from components.pipeline.images import decode_rgb, register_images
from components.pipeline.prefetch import mapped_ahead
from schemas.params import ChunkConfig
from schemas.settings import BatchSettings, ObjectStoreSettings


def main(
    work: Path, detector_spec: str, embedder_spec: str, device: str, precision: str, batch: int, count: int
) -> None:
    photos = sorted(write_photos(work / "probe-photos", count, seed=5).glob("*.jpg"))
    records, _ = register_images(photos, "probe")
    settings = FIXED_CROPS
    detector = load_detector(detector_spec, decide_machine(device, precision))
    if embedder_spec == "b32":
        embedder_spec = str(build_clip_vit_b32(work / "probe-clip"))
    embedder = load_embedder(embedder_spec, decide_machine(device, precision))
    sync: Callable[[], None] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    print("torch threads", torch.get_num_threads(), flush=True)

    def per_image(started: float) -> str:
        sync()
        return f"{1000 * (time.perf_counter() - started) / count:.2f} ms/img"

    started = time.perf_counter()
    images = [decode_rgb(path) for path in photos]
    print("decode serial", per_image(started))
    started = time.perf_counter()
    list(mapped_ahead(decode_rgb, photos, 8))
    print("decode 8 threads", per_image(started))

    def detect_all() -> None:
        for start in range(0, count, batch):
            detector.detect(images[start : start + batch], settings)

    detector.detect(images[:batch], settings)  # warm-up: builds ultralytics' predictor
    network = detector._model.predictor.model  # type: ignore[attr-defined]
    in_network = [0.0]
    entered: list[float] = []

    def before(*_: object) -> None:
        sync()
        entered.append(time.perf_counter())

    def after(*_: object) -> None:  # a forward hook must return None, or it replaces the output
        sync()
        in_network[0] += time.perf_counter() - entered.pop()

    network.register_forward_pre_hook(before)
    network.register_forward_hook(after)
    started = time.perf_counter()
    detect_all()
    print("detect on decoded images", per_image(started), f"of which network {1000 * in_network[0] / count:.2f} ms/img")
    profile = cProfile.Profile()
    profile.enable()
    detect_all()
    sync()
    profile.disable()
    report = io.StringIO()
    pstats.Stats(profile, stream=report).sort_stats("tottime").print_stats(22)
    print(report.getvalue()[-6000:])
    threads_before = torch.get_num_threads()
    for torch_threads in (1, 4):
        torch.set_num_threads(torch_threads)
        started = time.perf_counter()
        detect_all()
        print(f"detect with torch threads {torch_threads}", per_image(started), flush=True)
    torch.set_num_threads(threads_before)

    for threads in (1, 8):
        batching = BatchSettings(detect_batch_size=batch, embed_batch_size=256, decode_threads=threads)
        models = stages.ChunkModels(detector, "d", {"e": embedder}, decide_machine(device, precision, batching))
        config = ChunkConfig(
            detector=detector_spec,
            embedders=[embedder_spec],
            device=device,
            precision=precision,
            detection=settings,
            batching=batching,
            crops_uri=str(work / f"probe-crops-{threads}"),
            object_store=ObjectStoreSettings(),
        )
        started = time.perf_counter()
        done = stages.model_stage(records, models, config)
        seconds = {stage: round(value, 2) for stage, value in done.seconds.items()}
        print(f"model_stage threads {threads}", per_image(started), len(done.embeddings), seconds, flush=True)


if __name__ == "__main__":
    work, detector_spec, embedder_spec, device, precision, batch, count = sys.argv[1:8]
    main(Path(work), detector_spec, embedder_spec, device, precision, int(batch), int(count))
