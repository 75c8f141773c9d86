"""What regions beyond the detector's cost to index with the real models' architectures (issue 41's time target).

    python -m bench.region_cost [--photos 24] [--rounds 2]
    python -m bench.region_cost --publish docs/bench/region-cost-<time>.json   # the page from a saved run

The world's models are tiny, so its index seconds say little about what proposals or tiles cost
with yolov10x and CLIP ViT-B/32. This indexes real photos with those architectures (random weights:
they cost what the released models cost; `bench.models`), the detector held at 8 boxes a photo as
`bench.perf` holds it (`bench.plan.FIXED_CROPS`: random weights find nothing at normal thresholds),
each way a fresh index: the detector's crops alone; + proposals (up to 8, and up to 20); + tiles 2,3. The
photos are 640 px pieces of ultralytics' bus.jpg and zidane.jpg at several offsets and scales (real
texture: proposals on real photos fill their cap, where a world scene has about four). Rounds are
interleaved (this host's speed drifts) after an untimed warm-up; each way's fastest round counts.
Prints seconds per photo, the ratio to the detector's crops alone (the target: <= 1.5x), crop rows
and disk per photo; writes the JSON and rewrites its table in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.plan import CROPS_PER_IMAGE, FIXED_CROPS
from bench.report import (
    Row,
    add_publishing_options,
    machine,
    machine_header,
    publish_between_markers,
    saved_or_measured,
)

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "region-cost"
REPORT_START = "<!-- region cost report: written by `python -m bench.region_cost`; edits here are overwritten -->"
REPORT_END = "<!-- end of the region cost report -->"
TIME_TARGET = 1.5
WAYS: dict[str, dict[str, Any]] = {
    "detector crops": {"proposals": 0},
    "+ proposals 8": {"proposals": 8},
    "+ proposals 20": {"proposals": 20},
    "+ tiles 2,3": {"proposals": 0, "tiles": [2, 3]},
}


def real_photos(folder: Path, count: int) -> Path:
    """`count` distinct 640 px photos cut from ultralytics' two sample photos at several offsets and scales."""
    import ultralytics
    from PIL import Image

    assets = Path(ultralytics.__file__).parent / "assets"
    originals = [Image.open(assets / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        photo = originals[n % 2]
        share = 0.6 + 0.4 * ((n // 2) % 5) / 4  # 60% to 100% of the side
        width, height = round(photo.width * share), round(photo.height * share)
        left = round((photo.width - width) * ((n * 37) % 11) / 10)
        top = round((photo.height - height) * ((n * 53) % 7) / 6)
        piece = photo.crop((left, top, left + width, top + height))
        piece.thumbnail((640, 640))
        piece.save(folder / f"photo-{n:03d}.jpg", quality=90)
    return folder


def folder_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.exists() else 0


def index_once(photos: Path, work: Path, detector: str, embedder: str, **regions: Any) -> dict[str, float]:
    from flows.index_coco import index_coco

    data = work / f"data-{time.monotonic_ns()}"
    started = time.perf_counter()
    fixed = FIXED_CROPS.model_dump(include={"confidence", "max_detections", "min_box_pixels", "whole_frame_area"})
    # (proposals are each way's own: `regions`)
    report = index_coco(
        source=str(photos), data_dir=data, detector=detector, embedder=embedder, device="cpu", **fixed, **regions
    )
    seconds = time.perf_counter() - started
    photos_indexed = max(1, report.images_new)
    return {
        "seconds_per_photo": seconds / photos_indexed,
        "crops_per_photo": report.crops / photos_indexed,
        "vectors_per_photo": report.embeddings / photos_indexed,
        "disk_mb_per_photo": folder_bytes(data) / 1e6 / photos_indexed,
        "detect_seconds": report.model_seconds.get("detect", 0.0),
        "embed_seconds": report.model_seconds.get("embed", 0.0),
    }


def measure(photos: int, rounds: int, work: Path) -> dict[str, Any]:
    from bench.models import DETECTOR_ARCHITECTURE, build_clip_vit_b32

    folder = real_photos(work / "photos", photos)
    embedder = str(build_clip_vit_b32(work / "clip-vit-b32"))
    warm_up = real_photos(work / "warm-up", 2)
    for regions in WAYS.values():
        index_once(warm_up, work, DETECTOR_ARCHITECTURE, embedder, **regions)
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for _ in range(rounds):
        for way, regions in WAYS.items():
            runs[way].append(index_once(folder, work, DETECTOR_ARCHITECTURE, embedder, **regions))
    fastest = {way: min(found, key=lambda run: run["seconds_per_photo"]) for way, found in runs.items()}
    return {"photos": photos, "rounds": rounds, "runs": runs, "fastest": fastest}


def rows(figures: dict[str, Any]) -> list[Row]:
    fastest = figures["fastest"]
    base = fastest["detector crops"]["seconds_per_photo"]
    out = []
    for way, run in fastest.items():
        ratio = run["seconds_per_photo"] / base
        out.append(
            Row(
                f"{way}: s per photo (x detector crops) / crop rows / vector rows / disk MB per photo",
                f"{run['seconds_per_photo']:.2f} ({ratio:.2f}x) / {run['crops_per_photo']:.1f} / "
                f"{run['vectors_per_photo']:.1f} / {run['disk_mb_per_photo']:.2f}",
                target="" if way == "detector crops" else f"<= {TIME_TARGET}x",
                met=None if way == "detector crops" else ratio <= TIME_TARGET,
            )
        )
    return out


def render_section(figures: dict[str, Any], path: Path) -> str:
    facts = figures["machine"]
    table = [
        "| regions | s per photo | x detector crops alone | crop rows per photo | vectors per photo | disk MB "
        "per photo |",
        "|---|---|---|---|---|---|",
    ]
    base = figures["fastest"]["detector crops"]["seconds_per_photo"]
    for way, run in figures["fastest"].items():
        table.append(
            f"| {way} | {run['seconds_per_photo']:.2f} | {run['seconds_per_photo'] / base:.2f} | "
            f"{run['crops_per_photo']:.1f} | {run['vectors_per_photo']:.1f} | {run['disk_mb_per_photo']:.2f} |"
        )
    return "\n".join(
        [
            f"Measured {facts.get('measured_at', 'date not recorded')} at commit "
            f"`{facts.get('commit', 'commit not recorded')}` (`docs/bench/{path.name}`): {figures['photos']} photos "
            f"of 640 px cut from ultralytics' bus.jpg and zidane.jpg, yolov10x and CLIP ViT-B/32 (random weights, "
            f"{CROPS_PER_IMAGE} detector boxes a photo), the fastest of {figures['rounds']} interleaved rounds.",
            f"{machine_header(facts)}.",
            "",
            *table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    add_publishing_options(parser, REPO, "evaluation.md")
    args = parser.parse_args(argv)

    def measured() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="cropsearch-region-cost-") as work:
            return {"machine": machine(), **measure(args.photos, args.rounds, Path(work))}

    path, figures = saved_or_measured(args, BENCHMARK, measured, rows)
    body = render_section(figures, path)
    publish_between_markers(args.document, REPORT_START, REPORT_END, "What regions cost with the real models", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
