"""Vector, text and hybrid search on the synthetic world: what each mode finds, by object size, and how fast.

    python -m bench.search_modes [--scenes 300]

Indexes the world's held-out scenes with the committed world models (as `bench.min_score` does),
then asks every category query ("a photo of a red triangle", 12) and every scene's caption the way
`cropsearch query` asks by default (whole images and crops, one hit per photo, k=50) in each
`--mode`: vector (CLIP similarity), text (BM25 over crops' class names and images' captions) and
hybrid (both, fused by LanceDB's reciprocal-rank-fusion reranker). Scores are
`cropsearch eval`'s: mAP and recall@k over relevant photos, per size bucket of the object asked
for. Prints the table and writes it as JSON (`bench.publish` puts it in docs/performance.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.report import Row
from bench.world_index import index_held_out_world, world_bench_main
from components.evaluation.metrics import EvalResult, SearchMode
from schemas.settings import QueryMode

RANKINGS: tuple[QueryMode, ...] = ("vector", "text", "hybrid")
K = 50


def measured_modes(scenes: int, work: Path) -> tuple[EvalResult, dict[str, list[float]]]:
    """Every mode's scores over the world's queries, and each mode's seconds per query (search and join)."""
    from components.evaluation.metrics import evaluate_rankings, rank_with_index
    from components.models.devices import decide_machine
    from components.models.embedder import load_embedder
    from components.store.reader import StoreReader
    from schemas.params import WORLD_EMBEDDER

    db_uri, queries = index_held_out_world(scenes, work)
    rank = rank_with_index(
        StoreReader(db_uri), load_embedder(str(WORLD_EMBEDDER), decide_machine("cpu", "fp32")), queries, K
    )
    seconds: dict[str, list[float]] = {}

    def timed(index: int, mode: SearchMode) -> list[str]:
        started = time.perf_counter()
        ranked = rank(index, mode)
        seconds.setdefault(mode.name, []).append(time.perf_counter() - started)
        return ranked

    modes = [SearchMode(ranking, "both", ranking=ranking) for ranking in RANKINGS]
    return evaluate_rankings("world", queries, timed, modes=modes), seconds


def mode_rows(result: EvalResult, seconds: dict[str, list[float]]) -> list[Row]:
    rows = []
    for ranking in RANKINGS:

        def mean(group: str, bucket: str, metric: str, ranking: str = ranking) -> float:
            return result.mean(ranking, group, bucket, metric)

        by_size = ", ".join(f"{size} {mean('category', size, 'R@5'):.3f}" for size in ("small", "medium", "large"))
        rows += [
            Row(f"{ranking}: category queries, mAP", f"{mean('category', 'all', 'AP'):.3f}"),
            Row(f"{ranking}: category queries, R@5 by object size", by_size),
            Row(f"{ranking}: category queries, P@10", f"{mean('category', 'all', 'P@10'):.3f}"),
            Row(
                f"{ranking}: caption queries, R@1 / R@5 / R@10",
                " / ".join(f"{mean('caption', 'all', f'R@{k}'):.3f}" for k in (1, 5, 10)),
            ),
            Row(
                f"{ranking}: search and join per query, median / p95 (k={K})",
                f"{np.median(seconds[ranking]) * 1e3:.1f} / {np.percentile(seconds[ranking], 95) * 1e3:.1f} ms",
            ),
        ]
    return rows


def measure(scenes: int, work: Path) -> tuple[list[Row], dict[str, int]]:
    return mode_rows(*measured_modes(scenes, work)), {"k": K}


if __name__ == "__main__":
    world_bench_main("search-modes", __doc__, measure)
