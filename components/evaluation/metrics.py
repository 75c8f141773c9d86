"""Retrieval quality: recall@k, precision@5 and @10 and average precision per query, by object size and search mode.

A query is a text with its relevant images (keyed by file name), each tagged with a size bucket.
Bucket metrics score the images of that bucket only: relevant images of other buckets are taken
out of the ranking, so they neither count as hits nor push the bucket's images down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.models.embedder import Embedder
from components.search.ranking import find_hits
from components.store.reader import StoreReader
from schemas.settings import QueryMode, SearchSettings

SIZE_BUCKETS = ("small", "medium", "large")
ALL = "all"


@dataclass(frozen=True)
class EvalQuery:
    text: str
    relevant: dict[str, str]  # file name -> size bucket of the object in it ("all" for captions)
    group: str = "category"  # "category" or "caption" (or "named" / "unnamed"): reported separately
    # A query that names a size ("a small red triangle") is scored in that bucket alone; None: in every bucket.
    bucket: str | None = None


@dataclass(frozen=True)
class SearchMode:
    """What a query searches (`kinds`), how its hits are listed, and what ranks them (`--mode`)."""

    name: str
    kinds: str
    one_hit_per_image: bool = True
    ranking: QueryMode = "vector"


MODES = (
    SearchMode("whole images", "image"),
    SearchMode("crops", "crop"),
    SearchMode("whole + crops", "both"),
    SearchMode("whole + crops, every hit", "both", one_hit_per_image=False),
    # What `--mode` changes, over what a query searches by default: words alone, and words with vectors.
    SearchMode("whole + crops, text", "both", ranking="text"),
    SearchMode("whole + crops, hybrid", "both", ranking="hybrid"),
)


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant images among the first k results (a parent listed twice counts once)."""
    return len(set(ranked[:k]) & relevant) / len(relevant)


def precision_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the first k results that are relevant (every listed hit counts, as a person sees them)."""
    return sum(1 for name in ranked[:k] if name in relevant) / k


def average_precision(ranked: Sequence[str], relevant: set[str]) -> float:
    """Mean of precision at the rank of each relevant image found; relevant images never found count as 0."""
    found, total, seen = 0, 0.0, set()
    for rank, name in enumerate(ranked, start=1):
        if name in relevant and name not in seen:
            seen.add(name)
            found += 1
            total += found / rank
    return total / len(relevant)


@dataclass
class Scores:
    """Metric name -> values, one per query that had relevant images in the bucket."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def mean(self, name: str) -> float:
        return float(np.mean(self.values[name])) if self.values.get(name) else float("nan")

    @property
    def queries(self) -> int:
        return len(next(iter(self.values.values()), []))


def score_query(
    ranked: Sequence[str],
    relevant: dict[str, str],
    ks: Sequence[int],
    curve_ks: Sequence[int],
    precision_ks: Sequence[int] = (5, 10),
) -> dict[str, dict[str, float]]:
    """Every metric of one ranked list, overall and per size bucket present among the relevant images."""
    out: dict[str, dict[str, float]] = {}
    buckets = [ALL, *sorted({bucket for bucket in relevant.values() if bucket in SIZE_BUCKETS})]
    for bucket in buckets:
        wanted = set(relevant) if bucket == ALL else {name for name, b in relevant.items() if b == bucket}
        ignored = set(relevant) - wanted
        kept = [name for name in ranked if name not in ignored]
        metrics = {f"R@{k}": recall_at(kept, wanted, k) for k in sorted({*ks, *curve_ks})}
        metrics.update({f"P@{k}": precision_at(kept, wanted, k) for k in precision_ks})
        metrics["AP"] = average_precision(kept, wanted)
        out[bucket] = metrics
    return out


@dataclass
class EvalResult:
    """Scores[mode][group][bucket] for one index; `setting` names how that index was built."""

    setting: str
    scores: dict[str, dict[str, dict[str, Scores]]] = field(default_factory=dict)

    def record(self, mode: str, group: str, per_bucket: dict[str, dict[str, float]]) -> None:
        for bucket, metrics in per_bucket.items():
            target = self.scores.setdefault(mode, {}).setdefault(group, {}).setdefault(bucket, Scores())
            for name, value in metrics.items():
                target.add(name, value)

    def mean(self, mode: str, group: str, bucket: str, metric: str) -> float:
        scores = self.scores.get(mode, {}).get(group, {}).get(bucket)
        return scores.mean(metric) if scores else float("nan")


def evaluate_rankings(
    setting: str,
    queries: Sequence[EvalQuery],
    rank: Callable[[int, SearchMode], list[str]],
    modes: Sequence[SearchMode] = MODES,
    ks: Sequence[int] = (1, 5, 10, 50),
    curve_ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 30, 50),
) -> EvalResult:
    """Score `rank(query_index, mode)` (file names, best first) for every query and mode."""
    result = EvalResult(setting)
    for mode in modes:
        for index, query in enumerate(queries):
            if not query.relevant:
                continue
            per_bucket = score_query(rank(index, mode), query.relevant, ks, curve_ks)
            if query.bucket is not None:
                per_bucket = {query.bucket: per_bucket[query.bucket]} if query.bucket in per_bucket else {}
            result.record(mode.name, query.group, per_bucket)
    return result


def rank_with_index(
    store: StoreReader, embedder: Embedder, queries: Sequence[EvalQuery], k: int, batch: int = 256
) -> Callable[[int, SearchMode], list[str]]:
    """`rank(query_index, mode)` answered by the real query path (prefiltered search + parent join), as file names."""
    texts = [query.text for query in queries]
    vectors = np.concatenate([embedder.embed_texts(texts[i : i + batch]) for i in range(0, len(texts), batch)])

    def rank(index: int, mode: SearchMode) -> list[str]:
        params = SearchSettings(k=k, kinds=mode.kinds, one_hit_per_image=mode.one_hit_per_image, mode=mode.ranking)  # type: ignore[arg-type]
        return [Path(hit.image.uri).name for hit in find_hits(store, vectors[index], params, texts[index])]

    return rank


def means(result: EvalResult) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """mode -> group -> bucket -> metric -> mean over queries, as plain data for JSON and results."""
    return {
        mode: {
            group: {bucket: {name: scores.mean(name) for name in scores.values} for bucket, scores in buckets.items()}
            for group, buckets in groups.items()
        }
        for mode, groups in result.scores.items()
    }
