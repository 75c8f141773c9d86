"""Answering a query vector: prefiltered nearest neighbours, folded per parent, joined to records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from components.errors import StoreMismatchError, TextIndexMissing
from components.store.database import Database
from components.store.reader import StoreReader
from components.store.schema import search_filter
from schemas.results import FoldedHit, QueryHit, shown_score
from schemas.settings import Ranking, SearchSettings

# With one hit per image, several rows can share a parent: fetch this many rows per wanted hit
# first, and more only when the folded list comes out short. Every fetched row costs a refined
# vector and a joined record: at 1M rows, 20 rows searched in 11 ms and 40 in 18 ms.
_OVERFETCH = 2


def group_by_parent(rows: Sequence[dict[str, Any]], k: int, one_hit_per_image: bool) -> list[list[dict[str, Any]]]:
    """Rank rows (best first) into at most k groups: one per parent image, or one per row."""
    if not one_hit_per_image:
        return [[row] for row in rows[:k]]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["image_id"] in groups:
            groups[row["image_id"]].append(row)
        elif len(groups) < k:
            groups[row["image_id"]] = [row]
    return list(groups.values())


def find_hits(
    store: StoreReader, query_vector: np.ndarray | None, settings: SearchSettings, text: str | None = None
) -> list[QueryHit]:
    """The k best hits for a query, each joined to its parent image (and crop) in batched lookups.

    `settings.mode` says what ranks them: the vector (vector), the words of `text` (text), or both (hybrid).
    """
    if settings.region_sources and not store.vectors_know_region_sources(store.searched_embedder()):
        raise ValueError(
            "region_sources: this index's vectors were written before region sources were recorded on them; "
            "run `cropsearch index` on it once (nothing is detected or embedded again for that)"
        )
    search = ranked_rows(store, query_vector, text, search_mode(settings, text is not None, store))
    where = search_filter(
        *(settings.kinds, settings.classes, settings.min_confidence, settings.min_area_fraction),
        settings.region_sources,
    )
    fetch = settings.k * (_OVERFETCH if settings.one_hit_per_image else 1)
    while True:
        rows = search(where, fetch)
        fetched_all = len(rows) < fetch
        if settings.min_score is not None:
            # Rows come best first: once one falls under the cutoff, fetching more finds none above it.
            kept = [row for row in rows if shown_score(row["score"]) >= settings.min_score]
            fetched_all = fetched_all or len(kept) < len(rows)
            rows = kept
        groups = group_by_parent(rows, settings.k, settings.one_hit_per_image)
        if len(groups) >= settings.k or fetched_all:
            break
        fetch *= _OVERFETCH
    return join_records(store, groups)


def search_mode(settings: SearchSettings, text_query: bool, store: Database, embedder_id: str | None = None) -> Ranking:
    """The ranking a query gets: `auto` resolved, and a mode whose needs are not met refused by name.

    `auto` is hybrid where it can be: on the world's scenes it found the photo a caption describes far
    more often than vector search did, at nearly the same category mAP (docs/evaluation.md, "Search modes").
    The text index asked about is `embedder_id`'s (None: the store's own choice, the default's for a `Database`).
    """
    if settings.mode == "auto":
        return "hybrid" if text_query and store.has_text_index(embedder_id) else "vector"
    if settings.mode == "vector":
        return "vector"
    if not text_query:
        raise ValueError(
            f"mode: --mode {settings.mode} searches words, and this query has none (a picture, or a stored "
            "vector); use --mode vector"
        )
    # Asked first: a reader keeps a text index it has seen, so a query re-checking its resolved mode reads nothing.
    if store.has_text_index(embedder_id):
        return settings.mode
    if store.default_embedder() is None:
        raise StoreMismatchError(f"no index at {store.uri}: run `cropsearch index` first")
    raise TextIndexMissing(
        f"mode: the index at {store.uri} has no text index yet (it was made before text search); "
        f"run `cropsearch index` over it once (an unchanged run adds it), then --mode {settings.mode} works"
    )


def ranked_rows(
    store: StoreReader, query_vector: np.ndarray | None, text: str | None, ranking: Ranking
) -> Callable[[str, int], list[dict[str, Any]]]:
    """`search(where, limit)` for a ranking whose half of the query (vector, words, or both) is given.

    A word ranking without words is refused before this, by `search_mode`.
    """
    if ranking != "text" and query_vector is None:
        raise ValueError(f"mode: --mode {ranking} needs the query's vector")
    if ranking == "text":
        return lambda where, limit: store.search_text(text, where, limit)  # type: ignore[arg-type]
    if ranking == "hybrid":
        return lambda where, limit: store.search_hybrid(query_vector, text, where, limit)  # type: ignore[arg-type]
    return lambda where, limit: store.search(query_vector, where, limit)  # type: ignore[arg-type]


def join_records(store: StoreReader, groups: list[list[dict[str, Any]]]) -> list[QueryHit]:
    rows = [row for group in groups for row in group]
    images, crops = store.records_of_hits(
        sorted({row["image_id"] for row in rows}), sorted({row["crop_id"] for row in rows if row["crop_id"]})
    )
    hits: list[QueryHit] = []
    for group in groups:
        best, *rest = group
        # A parent is written last in a chunk; a hit whose parent is not there yet is not shown.
        if best["image_id"] not in images:
            continue
        hits.append(
            QueryHit(
                rank=len(hits) + 1,
                score=best["score"],
                kind=best["kind"],
                image=images[best["image_id"]],
                crop=crops.get(best["crop_id"]) if best["crop_id"] else None,
                folded=[
                    FoldedHit(score=row["score"], kind=row["kind"], crop=crops.get(row["crop_id"] or ""))
                    for row in rest
                ],
            )
        )
    return hits
