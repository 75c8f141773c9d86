"""What adding an embedder to an index costs: its own embedding, no detection (issue 23, item 1).

    python -m bench.add_embedder [--scenes 300]

Indexes the world's held-out scenes with its committed detector and CLIP (the embedder A), then
runs `cropsearch index --embedder B` over that index, where B is CLIP ViT-B/32 (the released
architecture, random weights: its cost is the real model's, its rankings are not). Beside it, a
fresh index made with B alone: what re-indexing to try B would cost without this. For each run:
seconds end to end, the detector's and the embedders' forward passes (seconds and batches), and
the vectors written. Prints the table and writes it as JSON (`bench.publish` puts it in
docs/performance.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.report import Row
from bench.world_index import held_out_world, index_world, world_bench_main


def timed_index(work: Path, db_uri: str, **settings: object) -> dict[str, Any]:
    started = time.perf_counter()
    report = index_world(work / "scenes", work, db_uri, **settings)
    stages = report.model_seconds
    return {
        "seconds": time.perf_counter() - started,
        "detect seconds": stages.get("detect", 0.0),
        "embed seconds": stages.get("embed", 0.0),
        "detector batches": report.detector_batches,
        "model batches": report.model_batches,
        "vectors": report.embeddings,
        "images": report.images_new + sum(report.images_embedded.values()),
    }


def measured_runs(scenes: int, work: Path) -> dict[str, dict[str, Any]]:
    from bench.models import build_clip_vit_b32

    held_out_world(scenes, work / "scenes")
    second = str(build_clip_vit_b32(work / "clip-vit-b32"))
    # Loading the models and the flow's first run cost seconds once: pay them before the timed runs.
    for embedder in (None, second):
        index_world(work / "scenes", work, str(work / "lancedb-warm-up"), limit=12, **_embedder(embedder))
    db_uri = str(work / "lancedb")
    return {
        "index with A": timed_index(work, db_uri),
        "add B to it": timed_index(work, db_uri, embedder=second),
        "a fresh index with B": timed_index(work, str(work / "lancedb-b"), embedder=second),
    }


def _embedder(spec: str | None) -> dict[str, str]:
    return {} if spec is None else {"embedder": spec}


def run_rows(runs: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for name, run in runs.items():
        rows.append(
            Row(
                f"{name}: run / detector / embedders' forward passes",
                f"{run['seconds']:.1f} s / {run['detect seconds']:.1f} s / {run['embed seconds']:.1f} s "
                f"({run['images']} photos, {run['vectors']} vectors)",
            )
        )
    added, fresh = runs["add B to it"], runs["a fresh index with B"]
    rows.append(
        Row(
            "add B: detector batches",
            str(added["detector batches"]),
            target="0",
            met=added["detector batches"] == 0,
        )
    )
    rows.append(
        Row(
            "add B: run time / a fresh index with B",
            f"{added['seconds']:.1f} s / {fresh['seconds']:.1f} s = {added['seconds'] / fresh['seconds']:.2f}x "
            f"(B's own forward passes: {added['embed seconds']:.1f} s)",
        )
    )
    return rows


def measure(scenes: int, work: Path) -> tuple[list[Row], dict[str, object]]:
    runs = measured_runs(scenes, work)
    return run_rows(runs), {"runs": runs}


if __name__ == "__main__":
    world_bench_main("add-embedder", __doc__, measure)
