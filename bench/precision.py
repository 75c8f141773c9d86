"""Which numeric precision is fastest on this CPU: fp32 against bf16 for the pipeline's two models.

    python -m bench.precision            # yolov10x + CLIP ViT-B/32 architectures (~3 min on 2 cores)
    python -m bench.precision --quick    # yolo11n + the world's small CLIP (checks the script itself)

`--precision auto` picks bf16 on CPUs with bf16 instructions (AMX or AVX-512 BF16) and fp32
elsewhere. This measures whether that is the faster choice here: each model's forward passes in
fp32 and in bf16, interleaved pair by pair so the host's drift hits both alike, on random weights
(they cost exactly what trained ones cost). It prints the CPU, its instruction sets, the ratio per
model, and whether `auto` chose the faster one; the full run exits with status 1 where it did not
(the quick run's small models only check the script).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from bench.models import DETECTOR_ARCHITECTURE, SMALL_DETECTOR_ARCHITECTURE, build_clip_vit_b32
from bench.report import Row, machine, machine_header, render, write_figures
from schemas.params import WORLD_EMBEDDER
from schemas.settings import DetectionSettings

PHOTO_SIZE = (640, 480)
CLIP_BATCH = 32


def _pictures(count: int, size: tuple[int, int]) -> list[Image.Image]:
    generator = np.random.default_rng(0)
    return [Image.fromarray(generator.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


def paired_seconds(runs: dict[str, Callable[[], object]], pairs: int) -> dict[str, list[float]]:
    """Seconds of each run, alternating which goes first, after one untimed warm-up call of each."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for pair in range(pairs):
        for name in names if pair % 2 == 0 else reversed(names):
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, few pairs")
    parser.add_argument("--pairs", type=int, default=None, help="timed fp32/bf16 pairs per model (default 6)")
    parser.add_argument("--work", type=Path, default=Path("data/bench"), help="folder for the built CLIP")
    args = parser.parse_args(argv)
    pairs = args.pairs or (2 if args.quick else 6)

    from components.models.detector import load_detector
    from components.models.devices import cpu_features, decide_machine, pick_precision
    from components.models.embedder import load_embedder

    facts = machine()
    print(machine_header(facts), flush=True)
    detector_spec = SMALL_DETECTOR_ARCHITECTURE if args.quick else DETECTOR_ARCHITECTURE
    embedder_spec = str(WORLD_EMBEDDER) if args.quick else str(build_clip_vit_b32(args.work / "clip-vit-b32"))
    photo = _pictures(1, PHOTO_SIZE)
    crops = _pictures(CLIP_BATCH, (224, 224))
    settings = DetectionSettings(confidence=0.0001, max_detections=8, min_box_pixels=1)

    detectors = {
        precision: load_detector(detector_spec, decide_machine("cpu", precision)) for precision in ("fp32", "bf16")
    }
    embedders = {
        precision: load_embedder(embedder_spec, decide_machine("cpu", precision)) for precision in ("fp32", "bf16")
    }
    models: dict[str, dict[str, Callable[[], object]]] = {
        f"{Path(detector_spec).stem}, one {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} photo": {
            precision: partial(detector.detect, photo, settings) for precision, detector in detectors.items()
        },
        f"CLIP {'(world)' if args.quick else 'ViT-B/32'}, {CLIP_BATCH} pictures": {
            precision: partial(embedder.embed_images, crops) for precision, embedder in embedders.items()
        },
    }
    auto = pick_precision("auto", "cpu", cpu_features())
    rows, faster = [], []
    for label, runs in models.items():
        seconds = paired_seconds(runs, pairs)
        fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
        faster.append("bf16" if bf16 < fp32 else "fp32")
        rows.append(
            Row(
                f"{label}: fp32 / bf16 ms (median of {pairs})",
                f"{fp32 * 1e3:.0f} / {bf16 * 1e3:.0f} = bf16 {fp32 / bf16:.2f}x fp32's speed",
            )
        )
    chosen_is_fastest = all(precision == auto for precision in faster)
    rows.append(
        Row(
            "precision auto picks on this CPU",
            f"{auto}; faster here: {', '.join(faster)}",
            target="the faster one",
            met=chosen_is_fastest,
        )
    )
    print(render(rows))
    if not args.quick:  # the quick run's small models only check the script
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"figures: {write_figures(args.work, 'precision', {'machine': facts, 'pairs': pairs}, rows)}")
    return 0 if chosen_is_fastest or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
