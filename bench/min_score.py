"""What `--min-score` is worth with the world's CLIP: how many hits each cutoff keeps, and how many of them are right.

    python -m bench.min_score [--scenes 300]

Indexes the world's held-out scenes (the seeds `cropsearch eval --benchmark world` uses) with the
committed world models, then asks what `cropsearch query` asks by default (whole images and crops,
one hit per photo) for every category ("a photo of a red triangle", 12 of them) and every scene's
caption, k=50. For each cutoff it counts the hits at or above it: how many per query, the share of
them that hold what was asked (precision), and the share of each query's relevant photos among
them (recall; k=50 caps it at 50 over a category's relevant photos, 66 to 92 of them on the 300
scenes). A caption has one relevant photo: for captions the row gives how often that photo is
kept. Prints the table and writes it as JSON (`bench.publish` puts it in docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import Row
from bench.world_index import index_held_out_world, world_bench_main

CUTOFFS = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
K = 50


@dataclass(frozen=True)
class ScoredHit:
    group: str  # "category" or "caption"
    query: int
    score: float
    relevant: bool


def scored_hits(scenes: int, work: Path) -> tuple[list[ScoredHit], dict[int, int]]:
    """Every hit of every world query with its score and relevance, and each query's count of relevant photos."""
    from components.models.devices import decide_machine
    from components.models.embedder import load_embedder
    from components.search.ranking import find_hits
    from components.store.reader import StoreReader
    from schemas.params import WORLD_EMBEDDER
    from schemas.settings import SearchSettings

    db_uri, queries = index_held_out_world(scenes, work)
    embedder = load_embedder(str(WORLD_EMBEDDER), decide_machine("cpu", "fp32"))
    texts = [query.text for query in queries]
    vectors = np.concatenate([embedder.embed_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    store, settings = StoreReader(db_uri), SearchSettings(k=K)
    hits = []
    for number, (query, vector) in enumerate(zip(queries, vectors, strict=True)):
        for hit in find_hits(store, vector, settings):
            hits.append(ScoredHit(query.group, number, hit.score, Path(hit.image.uri).name in query.relevant))
    return hits, {number: len(query.relevant) for number, query in enumerate(queries)}


def cutoff_rows(hits: list[ScoredHit], relevant_counts: dict[int, int]) -> list[Row]:
    rows = []
    for group in ("category", "caption"):
        queries = sorted({hit.query for hit in hits if hit.group == group})
        for cutoff in CUTOFFS:
            kept = [hit for hit in hits if hit.group == group and round(hit.score, 4) >= cutoff]
            right = sum(hit.relevant for hit in kept)
            recall = np.mean([
                sum(hit.relevant for hit in kept if hit.query == query) / relevant_counts[query] for query in queries
            ])  # fmt: skip
            if group == "caption":  # one relevant photo each: its precision says nothing
                value = f"{len(kept) / len(queries):.1f} hits/query, the photo described kept for {recall:.3f}"
            else:
                precision = f"{right / len(kept):.3f}" if kept else "-"
                value = f"{len(kept) / len(queries):.1f} hits/query, precision {precision}, recall {recall:.3f}"
            rows.append(Row(f"{group} queries, --min-score {cutoff:g}", value))
    return rows


def measure(scenes: int, work: Path) -> tuple[list[Row], dict[str, int]]:
    return cutoff_rows(*scored_hits(scenes, work)), {"k": K}


if __name__ == "__main__":
    world_bench_main("min-score", __doc__, measure)
