"""Step 2 of `make bench`: peak memory of fresh processes indexing a small and a five times larger source.

python -m bench.memory '<IndexParams JSON>'   # one measurement (what `measure_memory` starts per size)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.photos import write_photos
from bench.plan import TARGETS, Figures, Models, Plan, in_fresh_process, index_params, run_flow
from bench.report import Row
from schemas.params import IndexParams


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
        peaks[size] = in_fresh_process("bench.memory", params.model_dump_json())
    small, large = plan.memory_sizes
    growth = peaks[large]["indexing_peak_rss_mb"] / peaks[small]["indexing_peak_rss_mb"] - 1
    runs = {str(size): peaks[size] for size in plan.memory_sizes}
    return {"runs": runs, "growth": growth, "chunk_size": memory_chunk_size(plan)}


def memory_chunk_size(plan: Plan) -> int:
    return min(100, min(plan.memory_sizes))


def memory_child(params_json: str) -> None:
    """Index in this fresh process; report the peak RSS of the whole run and of the indexing alone.

    Loading the models has its own peak (weights read, then moved), the same at any dataset size;
    resetting the kernel's high-water mark after loading shows what indexing itself adds.
    """
    from components.models.detector import load_detector
    from components.models.devices import decide_machine
    from components.models.embedder import load_embedder

    params = IndexParams.model_validate_json(params_json)
    machine = decide_machine(params.device, params.precision, params.batching)  # as the flow will decide
    load_detector(params.resolved_detector, machine)  # cached: the flow reuses them
    load_embedder(params.embedder, machine)
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


if __name__ == "__main__":
    memory_child(sys.argv[1])
