"""What leaving near-full-frame crops unembedded saves on the world, and what it costs in quality.

    python -m bench.whole_frame [--scenes 300]

Indexes the world's held-out scenes once per `--whole-frame-area` value (each into a fresh
database, the same scenes and models): 1 (only exact whole-frame boxes left out: on the world,
every crop embedded, as indexes held before the setting), the default 0.9, and values low enough to reach the world's
largest objects (a scene is 256 px and its objects 10 to 150 px across, so no box covers more than
about a third of one). For each: crops, the crops left without a vector, embedding rows, the
index run's seconds, and retrieval as `cropsearch eval` scores it (whole images and crops, one hit
per photo, vector search): category mAP and small-object R@5, and their change from the value 1.
Prints the table and writes it as JSON (`bench.publish` puts it in docs/performance.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.report import Row
from bench.world_index import held_out_world, index_world, world_bench_main
from components.evaluation.metrics import SearchMode
from schemas.settings import WHOLE_FRAME_AREA_DEFAULT, WHOLE_FRAME_AREA_MIN

VALUES = (1.0, WHOLE_FRAME_AREA_DEFAULT, 0.3, WHOLE_FRAME_AREA_MIN)
K = 50
MODE = SearchMode("whole + crops", "both")


def measured_values(scenes: int, work: Path, values: tuple[float, ...] = VALUES) -> list[dict[str, float]]:
    """One index per value: its counts, its seconds, and its category mAP and small-object R@5."""
    from components.evaluation.metrics import evaluate_rankings, rank_with_index
    from components.models.devices import decide_machine
    from components.models.embedder import load_embedder
    from components.store.database import Database
    from components.store.reader import StoreReader
    from schemas.params import WORLD_EMBEDDER

    queries = held_out_world(scenes, work / "scenes")
    embedder = load_embedder(str(WORLD_EMBEDDER), decide_machine("cpu", "fp32"))
    # Loading the models and the flow's first run cost seconds once: pay them before the timed runs.
    index_world(work / "scenes", work, str(work / "lancedb-warm-up"), limit=12)
    measured = []
    for value in values:
        db_uri = str(work / f"lancedb-{value:g}")
        started = time.perf_counter()
        report = index_world(work / "scenes", work, db_uri, whole_frame_area=value)
        seconds = time.perf_counter() - started
        rank = rank_with_index(StoreReader(db_uri), embedder, queries, K)
        result = evaluate_rankings(f"{value:g}", queries, rank, modes=[MODE])
        measured.append({
            "whole_frame_area": value, "crops": report.crops, "whole_frame_crops": report.whole_frame_crops,
            "embeddings": Database(db_uri).counts()["embeddings"], "seconds": seconds,
            "mAP": result.mean(MODE.name, "category", "all", "AP"),
            "small R@5": result.mean(MODE.name, "category", "small", "R@5"),
        })  # fmt: skip
    return measured


def value_rows(measured: list[dict[str, float]]) -> list[Row]:
    base = measured[0]
    rows = []
    for each in measured:
        value = f"{each['whole_frame_area']:g}"
        saved = base["embeddings"] - each["embeddings"]
        rows += [
            Row(
                f"--whole-frame-area {value}: crops / without a vector / embedding rows",
                f"{each['crops']} / {each['whole_frame_crops']} / {each['embeddings']} ({saved} fewer than at 1)",
            ),
            Row(f"--whole-frame-area {value}: index run", f"{each['seconds']:.1f} s"),
            Row(
                f"--whole-frame-area {value}: category mAP / small-object R@5 (change from 1)",
                f"{each['mAP']:.3f} ({each['mAP'] - base['mAP']:+.3f}) / "
                f"{each['small R@5']:.3f} ({each['small R@5'] - base['small R@5']:+.3f})",
                target="" if each is base else "within ±0.01",
                met=None if each is base else _within(each, base, 0.01),
            ),
        ]
    return rows


def _within(each: dict[str, float], base: dict[str, float], tolerance: float) -> bool:
    return all(abs(each[metric] - base[metric]) <= tolerance for metric in ("mAP", "small R@5"))


def measure(scenes: int, work: Path) -> tuple[list[Row], dict[str, object]]:
    measured = measured_values(scenes, work)
    return value_rows(measured), {"k": K, "measured": measured}


if __name__ == "__main__":
    world_bench_main("whole-frame", __doc__, measure)
