"""The cutoff table's arithmetic (the benchmark itself indexes 300 scenes: `python -m bench.min_score`)."""

from __future__ import annotations

from bench.min_score import CUTOFFS, ScoredHit, cutoff_rows


def test_each_cutoff_counts_the_hits_it_keeps_and_how_many_are_right() -> None:
    hits = [
        ScoredHit("category", 0, 0.71, True), ScoredHit("category", 0, 0.62, False),
        ScoredHit("category", 0, 0.40, True), ScoredHit("category", 1, 0.66, True),
        ScoredHit("caption", 2, 0.64, True), ScoredHit("caption", 2, 0.61, False),
    ]  # fmt: skip
    relevant = {0: 4, 1: 2, 2: 1}
    rows = {row.measure: row.value for row in cutoff_rows(hits, relevant)}
    assert len(rows) == 2 * len(CUTOFFS)
    # no cutoff: 4 hits over 2 queries, 3 right; recall (2/4 + 1/2) / 2
    assert rows["category queries, --min-score 0"] == "2.0 hits/query, precision 0.750, recall 0.500"
    # 0.6 drops the 0.40 hit: 3 hits, 2 right; recall (1/4 + 1/2) / 2
    assert rows["category queries, --min-score 0.6"] == "1.5 hits/query, precision 0.667, recall 0.375"
    assert rows["category queries, --min-score 0.8"] == "0.0 hits/query, precision -, recall 0.000"
    assert rows["caption queries, --min-score 0.65"] == "0.0 hits/query, the photo described kept for 0.000"
    assert rows["caption queries, --min-score 0.6"] == "2.0 hits/query, the photo described kept for 1.000"
